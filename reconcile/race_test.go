//go:build race

package reconcile_test

// The command is built with the race detector when the test is, so that
// its packages come from the same build cache as the test's.
func init() { raceEnabled = true }
