package storage_test

import (
	"bytes"
	"math"
	"testing"

	"redrain/storage"
)

func TestPrefixEnd(t *testing.T) {
	cases := []struct {
		prefix, want []byte // want nil: no upper bound
	}{
		{[]byte("rr/acct/"), []byte("rr/acct0")},
		{[]byte("a"), []byte("b")},
		{[]byte("a\x00"), []byte("a\x01")},
		{[]byte("ab\xfe"), []byte("ab\xff")},
		{[]byte("a\xff"), []byte("b")},
		{[]byte("a\xff\xff"), []byte("b")},
		{[]byte("\x01\xff\xff\xff"), []byte("\x02")},
		{[]byte("a\xfe\xff"), []byte("a\xff")},
		{[]byte("\xff"), nil},
		{[]byte("\xff\xff\xff"), nil},
		{[]byte(""), nil},
		{nil, nil},
	}
	for _, c := range cases {
		// Extra capacity: PrefixEnd must not write into the caller's array.
		in := append(make([]byte, 0, len(c.prefix)+8), c.prefix...)
		orig := bytes.Clone(in)
		got := storage.PrefixEnd(in)
		if !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("PrefixEnd(%q) = %q, want %q", c.prefix, got, c.want)
		}
		if !bytes.Equal(in, orig) || !bytes.Equal(in[:cap(in)][len(in):], make([]byte, cap(in)-len(in))) {
			t.Errorf("PrefixEnd(%q) modified its argument", c.prefix)
		}
		if got == nil {
			continue
		}
		// Every key with the prefix sorts before the end, and the end itself
		// does not have the prefix.
		for _, suffix := range []string{"", "\x00", "\xff", "\xff\xff\xff\xff", "zzz"} {
			k := append(bytes.Clone(c.prefix), suffix...)
			if bytes.Compare(k, got) >= 0 {
				t.Errorf("PrefixEnd(%q) = %q, not after key %q", c.prefix, got, k)
			}
		}
		if bytes.HasPrefix(got, c.prefix) {
			t.Errorf("PrefixEnd(%q) = %q still has the prefix", c.prefix, got)
		}
	}
}

// TestPartitionOfSpreads checks that dense act_ids (a node allocates them in
// blocks of 4096) fall evenly over the partitions: Pearson's chi-square
// statistic of the counts stays under the 99.9th percentile of the
// chi-square distribution. The inputs are fixed, so the test is
// deterministic; the bound only says how even "even" must be.
func TestPartitionOfSpreads(t *testing.T) {
	for _, n := range []int32{1, 2, 3, 4, 5, 7, 8, 12, 16, 32, 64, 100} {
		for _, start := range []uint64{1, 4096 + 1, 1 << 20, 1 << 40, math.MaxUint64 - 1<<20} {
			perPartition := 1000
			total := uint64(perPartition) * uint64(n)
			counts := make([]int, n)
			for id := start; id < start+total; id++ {
				p := storage.PartitionOf(id, n)
				if p < 0 || p >= n {
					t.Fatalf("PartitionOf(%d, %d) = %d, out of range", id, n, p)
				}
				counts[p]++
			}
			if n == 1 {
				continue
			}
			chi2 := 0.0
			for _, c := range counts {
				d := float64(c - perPartition)
				chi2 += d * d / float64(perPartition)
			}
			if limit := chi2Quantile999(float64(n - 1)); chi2 > limit {
				t.Errorf("PartitionOf over [%d, +%d) into %d: chi2 = %.1f > %.1f; counts %v",
					start, total, n, chi2, limit, counts)
			}
		}
	}
}

// chi2Quantile999 approximates the 99.9th percentile of the chi-square
// distribution with df degrees of freedom (Wilson-Hilferty).
func chi2Quantile999(df float64) float64 {
	const z = 3.090 // standard normal 99.9th percentile
	a := 2 / (9 * df)
	return df * math.Pow(1-a+z*math.Sqrt(a), 3)
}

// TestPartitionOfStable pins the mapping: a grant's partition is part of
// the stream's layout (one user's grants stay ordered in one partition, and
// nodes of one cluster must agree), so changing the mix is a migration, not
// a refactor.
func TestPartitionOfStable(t *testing.T) {
	cases := []struct {
		actID uint64
		n     int32
		want  int32
	}{
		{1, 8, 1},
		{2, 8, 2},
		{3, 8, 4},
		{4096, 8, 4},
		{123456789, 8, 4},
		{1, 3, 0},
		{1, 64, 57},
		{math.MaxUint64, 8, 6},
		{0, 8, 0},
	}
	for _, c := range cases {
		if got := storage.PartitionOf(c.actID, c.n); got != c.want {
			t.Errorf("PartitionOf(%d, %d) = %d, want %d", c.actID, c.n, got, c.want)
		}
		if a, b := storage.PartitionOf(c.actID, c.n), storage.PartitionOf(c.actID, c.n); a != b {
			t.Errorf("PartitionOf(%d, %d) = %d then %d", c.actID, c.n, a, b)
		}
	}
}

func TestBindKeyRoundTrip(t *testing.T) {
	tests := []struct {
		app  uint32
		user string
	}{
		{1, "a"}, {2, "b-7"}, {math.MaxUint32, "x"}, {16, "with/slash/"}, {255, "中文"}, {7, "ff/"},
	}
	for _, tt := range tests {
		k := storage.BindKey(tt.app, tt.user)
		if !bytes.HasPrefix(k, storage.BindPrefix) {
			t.Errorf("BindKey(%d, %q) = %q, want it under %q", tt.app, tt.user, k, storage.BindPrefix)
		}
		app, user, ok := storage.ParseBindKey(k)
		if !ok || app != tt.app || user != tt.user {
			t.Errorf("ParseBindKey(%q) = %d, %q, %v; want %d, %q, true", k, app, user, ok, tt.app, tt.user)
		}
	}
	for _, k := range []string{"", "rr/bind/", "rr/bind/00000001/", "rr/bind/0000001/a", "rr/bind/0000000g/a",
		"rr/bind/00000001a", "rr/acct/00000001/a", "rr/bind/+0000001/a"} {
		if app, user, ok := storage.ParseBindKey([]byte(k)); ok {
			t.Errorf("ParseBindKey(%q) = %d, %q, true; want false", k, app, user)
		}
	}
}
