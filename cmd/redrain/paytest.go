package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"redrain/withdraw/paytest"
)

var paytestCommand = &command{name: "paytest",
	summary:  "serve a payout channel that pays every withdrawal at once (development and benchmarks only)",
	synopsis: "redrain paytest [--addr 127.0.0.1:0]",
	details: `Serves the payout protocol (POST {url}/pay, GET {url}/payouts/{id}) of
withdraw/paytest on --addr: every payout is paid at once, each id at most
once (a second Pay answers what the first did). It prints the serve flag
that names it, --payout-channel=test=URL, on stdout and runs until SIGINT
or SIGTERM. Nothing leaves: it is the channel of a development node.
A node on embedded defaults (redrain serve, make run) starts one of its
own when given no --payout-channel, and redrain dev starts one for the
nodes it serves.`,
	examples: `# a channel, then a node on the embedded backends that pays through it
redrain paytest --addr 127.0.0.1:9500 > /tmp/pay.flags &
redrain serve $(cat /tmp/pay.flags)`}

func (c *cli) paytest(args []string) error {
	fs := paytestCommand.flagSet()
	addr := fs.String("addr", "127.0.0.1:0", "listen address (host:port; port 0 picks a free one)")
	var lf logFlags
	lf.register(fs)
	if err := paytestCommand.parse(c, fs, args); err != nil {
		return err
	}
	log := lf.logger(c.stderr)
	s, err := paytest.Listen(*addr)
	if err != nil {
		return err
	}
	defer s.Close()
	sig, release := c.stopSignals()
	defer release()
	log.Info("payout test channel running (NOT FOR PRODUCTION: it pays nothing anywhere); pass the flag on stdout to serve", "url", s.URL)
	fmt.Fprintln(c.stdout, paytestFlag(s))
	log.Info("stopping", "signal", (<-sig).String(), "paid_fen", s.PaidTotal())
	return nil
}

// paytestFlag is the serve flag naming s as the payout channel "test".
func paytestFlag(s *paytest.Server) string { return "--payout-channel=test=" + s.URL }

// devPaytest starts redrain dev's payout channel on the loopback port it
// had before in dir (kept in paytest.addr, like the backends' ports), or
// on a free one that it keeps there: the nodes' --payout-channel stays
// right across restarts of the stack (unless the port was taken
// meanwhile: then a new one).
func devPaytest(dir string) (*paytest.Server, error) {
	path := filepath.Join(dir, "paytest.addr")
	addr := "127.0.0.1:0"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
		addr = strings.TrimSpace(string(b))
	}
	s, err := paytest.Listen(addr)
	if err != nil && addr != "127.0.0.1:0" {
		// Taken meanwhile (a client's socket): a new port, printed anew.
		s, err = paytest.Listen("127.0.0.1:0")
	}
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(s.Listener.Addr().String()+"\n"), 0o644); err != nil {
		s.Close()
		return nil, fmt.Errorf("dev: %w", err)
	}
	return s, nil
}
