package ingress

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// TestAppendStats: the stats are valid JSON with every field, the
// issue-to-booked histogram included when the node has one and left out
// when it has none (or a malformed one).
func TestAppendStats(t *testing.T) {
	type histogram struct {
		Bounds     []float64 `json:"bounds"`
		Cumulative []int64   `json:"cumulative"`
	}
	type stats struct {
		GrantsIssued  int64      `json:"grants_issued"`
		GrantsBooked  int64      `json:"grants_booked"`
		BookingLag    int64      `json:"booking_lag"`
		Ready         bool       `json:"ready"`
		CPUSeconds    float64    `json:"cpu_seconds"`
		GrantRecords  int64      `json:"grant_records"`
		Allocs        int64      `json:"allocs"`
		AllocBytes    int64      `json:"alloc_bytes"`
		BookingKeys   int64      `json:"booking_keys"`
		BookingTxns   int64      `json:"booking_txns"`
		IssueToBooked *histogram `json:"issue_to_booked_seconds"`
	}
	base := Stats{GrantsIssued: 10, GrantsBooked: 9, BookingLag: 1, Ready: true, CPUSeconds: 1.25,
		GrantRecords: 3, Allocs: 400, AllocBytes: 25_600, BookingKeys: 5, BookingTxns: 2}
	withHist := base
	withHist.IssueToBookedBounds = []float64{0.01, 0.025, 1.5}
	withHist.IssueToBooked = []int64{2, 5, 9, 9}
	malformed := base
	malformed.IssueToBookedBounds = []float64{0.01}
	malformed.IssueToBooked = []int64{2}
	for _, tc := range []struct {
		name string
		in   Stats
		hist *histogram
	}{
		{"without histogram", base, nil},
		{"with histogram", withHist, &histogram{Bounds: []float64{0.01, 0.025, 1.5}, Cumulative: []int64{2, 5, 9, 9}}},
		{"malformed histogram", malformed, nil},
	} {
		b := appendStats(nil, tc.in)
		var got stats
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("%s: appendStats = %s: %v", tc.name, b, err)
		}
		want := stats{GrantsIssued: 10, GrantsBooked: 9, BookingLag: 1, Ready: true, CPUSeconds: 1.25,
			GrantRecords: 3, Allocs: 400, AllocBytes: 25_600, BookingKeys: 5, BookingTxns: 2, IssueToBooked: tc.hist}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: appendStats = %s, decoded %+v, want %+v", tc.name, b, got, want)
		}
	}
}
