package node_test

import (
	"net"
	"testing"

	"redrain/node"
)

// TestStartFails: a node that cannot start returns an error (it does not
// panic) and releases what it had started, so the same data dir can be
// used again at once.
func TestStartFails(t *testing.T) {
	dir := t.TempDir()

	// Redis unreachable: fails before the cluster member starts.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redisAddr := closed.Addr().String()
	closed.Close()
	if n, err := node.Start(node.Config{DataDir: dir, HTTP: "127.0.0.1:0", Redis: redisAddr, Log: newTestLog(t)}); err == nil {
		stopNode(t, n)
		t.Fatalf("Start with Redis at %s (nothing listening) succeeded", redisAddr)
	}

	// HTTP address taken: fails last, after everything else started.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if n, err := node.Start(node.Config{DataDir: dir, HTTP: taken.Addr().String(), Log: newTestLog(t)}); err == nil {
		stopNode(t, n)
		t.Fatalf("Start on a taken HTTP address %s succeeded", taken.Addr())
	}

	// Everything was released: the data dir opens again.
	n := startNode(t, dir, "")
	stopNode(t, n)
}
