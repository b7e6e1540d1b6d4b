package metrics_test

import (
	"testing"

	"redrain/metrics"
)

func TestProcessCPUSecondsGrows(t *testing.T) {
	before := metrics.ProcessCPUSeconds()
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	if after := metrics.ProcessCPUSeconds(); after <= before || x < 0 {
		t.Errorf("ProcessCPUSeconds went from %v to %v over busy work", before, after)
	}
}
