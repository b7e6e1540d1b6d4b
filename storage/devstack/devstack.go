// Package devstack runs the backends that several `redrain serve`
// processes share during development, on loopback ports: the Kafka-protocol
// broker (kfake, with its log in the data dir), Redis (redis-server when
// installed, with an append-only file; else the embedded server) and a
// TiKV-protocol development server over client-go's test cluster that the
// production client reaches through PD. Not for production: real
// deployments point nodes at real Kafka, PD/TiKV and Redis.
package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"redrain/storage"
	"redrain/storage/tikvdev"
)

// Config says where the stack keeps its data.
type Config struct {
	DataDir    string
	Partitions int32 // of the grant topic when it is created
	Log        *slog.Logger
}

// Ports are the stack's loopback ports, chosen on first start and kept in
// the data dir so that a restarted stack comes back where nodes expect it.
type Ports struct {
	Kafka int `json:"kafka"`
	PD    int `json:"pd"`
	Redis int `json:"redis"`
}

// Stack is a running development stack.
type Stack struct {
	Ports     Ports
	cfg       Config
	mu        sync.Mutex // guards kafka and tikv across restarts
	kafka     *storage.Kafka
	tikv      *tikvdev.Server
	redisCmd  *exec.Cmd
	mini      *miniredis.Miniredis
	RedisKind string // "redis-server" or "embedded"
}

// Start starts the stack; any part that fails stops the others.
func Start(cfg Config) (s *Stack, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = storage.GrantPartitionsDefault
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	ports, err := loadPorts(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s = &Stack{Ports: ports, cfg: cfg}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.kafka, err = storage.StartBroker(cfg.DataDir, ports.Kafka, cfg.Partitions); err != nil {
		return nil, err
	}
	if s.tikv, err = tikvdev.Start(filepath.Join(cfg.DataDir, "tikv"), addr(ports.PD)); err != nil {
		return nil, err
	}
	if err = s.startRedis(cfg.DataDir, ports.Redis); err != nil {
		return nil, err
	}
	return s, nil
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// RestartBroker stops the broker, waits down and starts it again on its
// port from its data (a broker crash, for failure tests): clients see
// their connections fail meanwhile.
func (s *Stack) RestartBroker(down time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kafka.Close()
	time.Sleep(down)
	k, err := storage.StartBroker(s.cfg.DataDir, s.Ports.Kafka, s.cfg.Partitions)
	if err != nil {
		return fmt.Errorf("devstack: broker restart: %w", err)
	}
	s.kafka = k
	return nil
}

// RestartTiKV stops the TiKV-protocol server, waits down and starts it
// again on its addresses from its data (the store down, for failure
// tests): clients see their requests fail meanwhile.
func (s *Stack) RestartTiKV(down time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.tikv.Close(); err != nil {
		return fmt.Errorf("devstack: tikv stop: %w", err)
	}
	time.Sleep(down)
	t, err := tikvdev.Start(filepath.Join(s.cfg.DataDir, "tikv"), addr(s.Ports.PD))
	if err != nil {
		return fmt.Errorf("devstack: tikv restart: %w", err)
	}
	s.tikv = t
	return nil
}

// Flags are the `redrain serve` flags that point a node at this stack.
func (s *Stack) Flags() string {
	return fmt.Sprintf("--kafka=%s --pd=%s --redis=%s", addr(s.Ports.Kafka), s.tikv.PDAddr(), addr(s.Ports.Redis))
}

// Close stops every part.
func (s *Stack) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.redisCmd != nil && s.redisCmd.Process != nil {
		// SIGTERM lets redis-server flush its append-only file.
		_ = s.redisCmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.redisCmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = s.redisCmd.Process.Kill()
			<-done
		}
	}
	if s.mini != nil {
		s.mini.Close()
	}
	if s.tikv != nil {
		_ = s.tikv.Close()
	}
	if s.kafka != nil {
		s.kafka.Close()
	}
}

func (s *Stack) startRedis(dir string, port int) error {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		s.RedisKind = "embedded"
		s.mini = miniredis.NewMiniRedis()
		if err := s.mini.StartAddr(addr(port)); err != nil {
			return fmt.Errorf("devstack: embedded redis: %w", err)
		}
		return nil
	}
	s.RedisKind = "redis-server"
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	cmd := exec.Command(path, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", rdir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no")
	logf, err := os.OpenFile(filepath.Join(rdir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// If this process dies (even by kill -9), the kernel sends redis-server
	// SIGTERM (it flushes its append-only file), so a restarted stack finds
	// the port free. The signal follows the thread that forked, so the
	// start holds its OS thread.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	// The previous stack's redis-server may still be flushing and holding
	// the port (it got its SIGTERM when that stack died): start once the
	// port is free, or the new server fails to bind while the old one
	// still answers, then exits.
	if err := waitPortFree(port, 10*time.Second); err != nil {
		logf.Close()
		return fmt.Errorf("devstack: redis port: %w", err)
	}
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		logf.Close()
		return fmt.Errorf("devstack: start redis-server: %w", err)
	}
	s.redisCmd = cmd
	c := redis.NewClient(&redis.Options{Addr: addr(port), MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The server that answers must be the one started here.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		info, err := c.Info(ctx, "server").Result()
		cancel()
		if err == nil && strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", cmd.Process.Pid)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devstack: redis-server on port %d did not answer (see %s)", port, logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadPorts reads the stack's ports, choosing free ones on first start.
// Ports stay below 32768: higher fixed ports collide with client sockets.
func loadPorts(dir string) (Ports, error) {
	p := filepath.Join(dir, "dev-ports.json")
	var ports Ports
	b, err := os.ReadFile(p)
	if err == nil {
		if err := json.Unmarshal(b, &ports); err != nil {
			return ports, fmt.Errorf("devstack: %s: %w", p, err)
		}
		return ports, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return ports, fmt.Errorf("devstack: %w", err)
	}
	taken := map[int]bool{}
	for _, dst := range []*int{&ports.Kafka, &ports.PD, &ports.Redis} {
		if *dst, err = freePort(taken); err != nil {
			return ports, err
		}
	}
	b, _ = json.Marshal(ports)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return ports, fmt.Errorf("devstack: %w", err)
	}
	return ports, nil
}

func freePort(taken map[int]bool) (int, error) {
	for attempt := 0; attempt < 100; attempt++ {
		port := 20000 + rand.IntN(12767)
		if taken[port] {
			continue
		}
		l, err := net.Listen("tcp", addr(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		taken[port] = true
		return port, nil
	}
	return 0, errors.New("devstack: no free loopback port below 32768")
}

// waitPortFree waits until a listener can bind 127.0.0.1:port.
func waitPortFree(port int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		l, err := net.Listen("tcp", addr(port))
		if err == nil {
			return l.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d still in use after %v: %w", port, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
