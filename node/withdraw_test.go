package node_test

import (
	"testing"

	"redrain/node"
)

func TestParsePayoutChannel(t *testing.T) {
	for _, c := range []struct {
		in, name, url string
		ok            bool
	}{
		{"bank=https://pay.example.com/", "bank", "https://pay.example.com", true},
		{"test=http://127.0.0.1:9000/v1", "test", "http://127.0.0.1:9000/v1", true},
		{"bank", "", "", false},
		{"=https://pay.example.com", "", "", false},
		{"bank=ftp://pay.example.com", "", "", false},
	} {
		name, url, err := node.ParsePayoutChannel(c.in)
		if (err == nil) != c.ok || name != c.name || url != c.url {
			t.Errorf("ParsePayoutChannel(%q) = %q, %q, %v; want %q, %q, ok %v", c.in, name, url, err, c.name, c.url, c.ok)
		}
	}
}
