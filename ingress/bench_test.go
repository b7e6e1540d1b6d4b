package ingress

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"redrain/adminauth"
	"redrain/grant/granttest"
	"redrain/protect"
)

// BenchmarkGrantBatch sends POST /v1/grants/batch of 100 new users (or,
// "single", POST /v1/grants of one) on 8 loopback connections at once to
// an owner node's API (8 shards, the embedded broker, the guard on its
// default switches, no booking): parsing, the guard, binding, admission,
// token sealing and the JSON answer; "signed" with app keys, every
// request signed by its app and verified (apps.go), "unsigned" without.
// ns/op and allocs/op are per grant (the clients' included: they reuse
// their buffers). "cpu-ns/grant" is the process's CPU per grant, the
// broker's included; "client-cpu-ns/grant" what the clients' threads spent
// building (and signing) requests and reading answers;
// "server-cpu-ns/grant" the difference; "grants/record" how many grants
// shared a grant-stream record.
func BenchmarkGrantBatch(b *testing.B) {
	for _, batch := range []int{100, 1} {
		for _, signed := range []bool{false, true} {
			name := fmt.Sprintf("batch=%d/unsigned", batch)
			if signed {
				name = fmt.Sprintf("batch=%d/signed", batch)
			}
			b.Run(name, func(b *testing.B) { benchmarkGrants(b, batch, signed) })
		}
	}
}

func benchmarkGrants(b *testing.B, batch int, signed bool) {
	var configure []func(*Server)
	signer := appSigner(b, 0)
	if signed {
		keys, err := adminauth.ParseAppKeys(appKeys)
		if err != nil {
			b.Fatal(err)
		}
		configure = append(configure, func(s *Server) {
			s.Apps = &adminauth.Verifier{Keys: keys, Window: adminauth.AppWindowDefault, Nonces: adminauth.NewHashNonces(2 * adminauth.AppWindowDefault)}
		})
	}
	ts := newServerOn(b, protect.NewGuard(nil), true, 8, configure...)
	addr := strings.TrimPrefix(ts.url, "http://")
	path := "/v1/grants/batch"
	if batch == 1 {
		path = "/v1/grants"
	}
	const conns = 8
	var next, clientCPU atomic.Int64 // next: grants handed to the clients so far
	b.ReportAllocs()
	cpu0, records0 := granttest.ProcessCPU(), ts.grants.Records()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := granttest.ThreadCPU()
			defer func() { clientCPU.Add(int64(granttest.ThreadCPU() - t0)) }()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 64<<10)
			var body, req, answer []byte
			for {
				// b.N grants in all, in batches (the last shorter), so
				// that ns/op and allocs/op are per grant whatever b.N.
				first := next.Add(int64(batch)) - int64(batch)
				if first >= int64(b.N) {
					return
				}
				n := int(min(int64(batch), int64(b.N)-first))
				if batch == 1 {
					body = appendGrantBody(body[:0], first)
				} else {
					body = appendBatchBody(body[:0], first, n)
				}
				req = append(append(append(req[:0], "POST "...), path...), " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"...)
				if signed {
					h, err := signer.Headers("POST", path, "", body)
					if err != nil {
						b.Error(err)
						return
					}
					for k, v := range h {
						req = append(append(append(append(req, k...), ": "...), v[0]...), "\r\n"...)
					}
				}
				req = append(req, "Content-Length: "...)
				req = strconv.AppendInt(req, int64(len(body)), 10)
				req = append(append(req, "\r\n\r\n"...), body...)
				if _, err := c.Write(req); err != nil {
					b.Error(err)
					return
				}
				if answer, err = readAnswer(br, answer[:0]); err != nil {
					b.Error(err)
					return
				}
				if issued := bytes.Count(answer, []byte(`"status":"issued"`)); issued != n {
					b.Errorf("%d of %d issued: %.300s", issued, n, answer)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	grants := float64(b.N)
	cpu := float64(granttest.ProcessCPU() - cpu0)
	b.ReportMetric(cpu/grants, "cpu-ns/grant")
	b.ReportMetric(float64(clientCPU.Load())/grants, "client-cpu-ns/grant")
	b.ReportMetric((cpu-float64(clientCPU.Load()))/grants, "server-cpu-ns/grant")
	b.ReportMetric(grants/b.Elapsed().Seconds(), "grants/s")
	b.ReportMetric(grants/float64(ts.grants.Records()-records0), "grants/record")
}

// appendGrantBody appends a single grant request of user number i.
func appendGrantBody(dst []byte, i int64) []byte {
	dst = append(dst, `{"app_id":1,"user_id":"h`...)
	dst = strconv.AppendInt(dst, i, 10)
	return append(dst, `","activity_id":"demo","scene_id":"rain","rain_id":1}`...)
}

// appendBatchBody appends a batch request of n users numbered from first.
func appendBatchBody(dst []byte, first int64, n int) []byte {
	dst = append(dst, `{"grants":[`...)
	for i := range int64(n) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendGrantBody(dst, first+i)
	}
	return append(dst, "]}"...)
}

// readAnswer reads one HTTP answer and appends its body to dst; an answer
// other than 200 is an error.
func readAnswer(br *bufio.Reader, dst []byte) ([]byte, error) {
	status, err := br.ReadSlice('\n')
	if err != nil {
		return dst, err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return dst, fmt.Errorf("answer %q", status)
	}
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return dst, err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return dst, err
			}
		}
	}
	if n < 0 {
		return dst, errors.New("answer without Content-Length")
	}
	dst = append(dst, make([]byte, n)...)
	_, err = io.ReadFull(br, dst[len(dst)-n:])
	return dst, err
}
