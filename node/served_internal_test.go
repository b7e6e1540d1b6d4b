package node

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// TestServedReportsDeadListeners: when a listener dies under a running
// node, Served reports its server's error, which is how `redrain serve`
// learns to stop and exit non-zero.
func TestServedReportsDeadListeners(t *testing.T) {
	n, err := Start(Config{DataDir: t.TempDir(), HTTP: "127.0.0.1:0", AdminHTTP: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	for _, l := range []struct {
		name  string
		close func() error
	}{{"API", n.listener.Close}, {"operations", n.opsListener.Close}} {
		if err := l.close(); err != nil {
			t.Fatal(err)
		}
		if err := <-n.Served(); err == nil {
			t.Errorf("the %s listener closed under the node: Served reported nil, want the accept error", l.name)
		}
	}
}
