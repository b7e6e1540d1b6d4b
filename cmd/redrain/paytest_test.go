package main

import "testing"

// TestDevPaytestKeepsItsPort: redrain dev's payout channel comes back on
// the port it had (the nodes' --payout-channel stays right), and on a new
// one when that port is taken.
func TestDevPaytestKeepsItsPort(t *testing.T) {
	dir := t.TempDir()
	first, err := devPaytest(dir)
	if err != nil {
		t.Fatal(err)
	}
	url := first.URL
	first.Close()
	again, err := devPaytest(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.URL != url {
		t.Errorf("restarted channel at %s, want %s", again.URL, url)
	}
	other, err := devPaytest(dir) // its port is taken by again
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.URL == url {
		t.Errorf("a second channel at the taken %s", url)
	}
	if got := paytestFlag(other); got != "--payout-channel=test="+other.URL {
		t.Errorf("flag %q", got)
	}
}
