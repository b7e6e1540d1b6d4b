package bench

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestScanStringFastPath: scanString answers as the byte-at-a-time scan
// alone (scanStringByByte, what it was before its fast path) does, for
// strings of printable ASCII, escapes, control bytes, UTF-8 and invalid
// UTF-8 of every length around the fast path's words of eight, closed or
// not, with more JSON after them.
func TestScanStringFastPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	alphabet := [][]byte{
		[]byte("a"), []byte("Z"), []byte("0"), []byte(" "), []byte("~"), {0x7f},
		[]byte(`\"`), []byte(`\\`), []byte(`\n`), []byte(`\u00e9`), []byte(`\`),
		{0x01}, {0x1f}, []byte("\t"), []byte("é"), []byte("红包"), {0xff}, {0xc3},
	}
	for n := range 5000 {
		size := n % 40
		in := []byte{'"'}
		for range size {
			// Mostly printable ASCII, as the node's answers are.
			if rng.IntN(4) > 0 {
				in = append(in, byte(0x20+rng.IntN(0x5f)))
				continue
			}
			in = append(in, alphabet[rng.IntN(len(alphabet))]...)
		}
		if rng.IntN(8) > 0 {
			in = append(in, `","next":1}`...)
		}
		s, next, ok := scanString(in, 0)
		ws, wnext, wok := scanStringByByte(in, 0)
		if ok != wok || next != wnext || !bytes.Equal(s, ws) {
			t.Fatalf("scanString(%q) = %q %d %v, the byte-at-a-time scan %q %d %v", in, s, next, ok, ws, wnext, wok)
		}
	}
}

// TestPlainASCII: a word of eight or a tail with a backslash, a control
// byte or a byte of 0x80 or more anywhere is not plain.
func TestPlainASCII(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"", true},
		{"abcdefgh", true},
		{"abcdefghijklmnopq ~\x7f", true},
		{"abcdefg\\", false},
		{"\\bcdefgh", false},
		{"abcdefgh\x1f", false},
		{"abc\x00efgh", false},
		{"abcdefg\x80", false},
		{"é", false},
		{"abcdefgh\\", false},
		{" !#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}", true},
	} {
		if got := plainASCII([]byte(tc.s)); got != tc.want {
			t.Errorf("plainASCII(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
