// Package paytest is a payout channel over real HTTP for tests, the dev
// stack and benchmarks (httptest): it speaks withdraw.HTTPChannel's
// protocol, pays each payout id at most once, counts what it paid, and
// plays a script per payout id: pay, refuse, answer after the client's
// deadline (having paid, or not), receive a Pay late (after a second Pay
// of the same id), and answer a late, contradictory outcome. It must never pay an id twice: a second Pay of an id it has
// answers what it did the first time.
package paytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Step is what the server does with one Pay request of an id it has not
// paid or refused yet.
type Step struct {
	// Refuse refuses the payout instead of paying it.
	Refuse bool
	// Delay holds the answer that long after acting (past the client's
	// deadline it is a time-out: the client does not know what happened).
	Delay time.Duration
	// Drop loses the request: nothing is paid or recorded, and the answer
	// (after Delay) is a 503.
	Drop bool
	// LatePaid pays but answers "refused"; queries answer "paid" (a
	// channel that contradicts itself later).
	LatePaid bool
	// Status, when not 0, replaces the answer's HTTP status (e.g. 500
	// after paying: the client cannot tell what happened).
	Status int
	// Late makes the request reach the channel that much later (slow in
	// the network): the server acts on it only then, as on any Pay of the
	// id, whether or not the client still waits. A Pay of the same id
	// sent meanwhile is acted on first, and this one is then its
	// duplicate.
	Late time.Duration
}

// Server is the payout test server.
type Server struct {
	*httptest.Server
	mu      sync.Mutex
	scripts map[string][]Step
	deflt   Step
	payouts map[string]*payout
	pays    map[string]int // Pay requests per id
	dups    map[string]int // Pay requests of an id already acted on
	paid    int64          // fen paid in all
}

type payout struct {
	amount   int64
	paid     bool // money left: counted once
	answered string
	ref      string
	times    int // how many times it was paid (must stay <= 1)
}

// New starts a server whose ids all follow the default script (pay at
// once) until Script says otherwise.
func New() *Server {
	s := newServer()
	s.Start()
	return s
}

// Listen starts a server on addr (host:port; port 0 picks one) that pays
// every payout at once: the channel of a development node (redrain
// paytest, redrain dev, make run). Its URL is s.URL.
func Listen(addr string) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("paytest: %w", err)
	}
	s := newServer()
	s.Listener.Close()
	s.Listener = l
	s.Start()
	return s, nil
}

func newServer() *Server {
	s := &Server{scripts: map[string][]Step{}, payouts: map[string]*payout{}, pays: map[string]int{}, dups: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /pay", s.pay)
	mux.HandleFunc("GET /payouts/{id}", s.query)
	s.Server = httptest.NewUnstartedServer(mux)
	return s
}

// Script sets what the next Pay requests of id do, one step each; later
// ones follow the default.
func (s *Server) Script(id string, steps ...Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[id] = append(s.scripts[id], steps...)
}

// Default sets what a Pay of an id with no script left does.
func (s *Server) Default(st Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deflt = st
}

// Paid returns how many times id was paid (a correct client: 0 or 1).
func (s *Server) Paid(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.payouts[id]; p != nil {
		return p.times
	}
	return 0
}

// PaidTotal returns the fen paid in all.
func (s *Server) PaidTotal() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paid
}

// Duplicates returns how many Pay requests of id came after the server
// had acted on one (answered with what it did, paying nothing).
func (s *Server) Duplicates(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dups[id]
}

// Requests returns how many Pay requests of id arrived.
func (s *Server) Requests(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pays[id]
}

type payRequest struct {
	ID     string `json:"id"`
	ActID  uint64 `json:"act_id"`
	Amount int64  `json:"amount"`
}

func (s *Server) pay(w http.ResponseWriter, r *http.Request) {
	var req payRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil || json.Unmarshal(body, &req) != nil || req.ID == "" || req.Amount <= 0 {
		http.Error(w, "bad payout", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.pays[req.ID]++
	p := s.payouts[req.ID]
	st := s.deflt
	if p == nil {
		if q := s.scripts[req.ID]; len(q) > 0 {
			st, s.scripts[req.ID] = q[0], q[1:]
		}
		if st.Late > 0 {
			s.mu.Unlock()
			time.Sleep(st.Late) // in the network: it arrives whatever the client does
			s.mu.Lock()
			p = s.payouts[req.ID]
		}
	}
	if p == nil {
		if !st.Drop {
			p = &payout{amount: req.Amount, ref: fmt.Sprintf("pt-%s", req.ID[:min(8, len(req.ID))])}
			switch {
			case st.Refuse:
				p.answered = "refused"
			case st.LatePaid:
				p.answered, p.paid, p.times = "refused", true, 1
				s.paid += req.Amount
			default:
				p.answered, p.paid, p.times = "paid", true, 1
				s.paid += req.Amount
			}
			s.payouts[req.ID] = p
		}
	} else {
		st = Step{} // a duplicate: answered at once with what was done
		s.dups[req.ID]++
		if p.amount != req.Amount {
			s.mu.Unlock()
			http.Error(w, "id reused with another amount", http.StatusConflict)
			return
		}
	}
	var answer []byte
	if p != nil {
		answer = p.answerJSON(p.answered)
	}
	s.mu.Unlock()
	if st.Delay > 0 {
		t := time.NewTimer(st.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done(): // the client gave up: it learns nothing
			t.Stop()
			return
		}
	}
	switch {
	case st.Drop:
		http.Error(w, "lost", http.StatusServiceUnavailable)
	case st.Status != 0:
		http.Error(w, "failed", st.Status)
	default:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}
}

func (p *payout) answerJSON(status string) []byte {
	if status == "paid" {
		return fmt.Appendf(nil, `{"status":"paid","ref":%q}`, p.ref)
	}
	return []byte(`{"status":"refused","reason":"declined by the test channel"}`)
}

func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	p := s.payouts[id]
	var answer []byte
	if p != nil {
		status := p.answered
		if p.paid {
			status = "paid" // the truth, even where Pay said otherwise
		}
		answer = p.answerJSON(status)
	}
	s.mu.Unlock()
	if answer == nil {
		http.Error(w, "no such payout", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer)
}

// String describes the server's state for a failure message.
func (s *Server) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "paytest %s: %d fen paid;", s.URL, s.paid)
	for id, p := range s.payouts {
		fmt.Fprintf(&b, " %s=%s×%d", id, p.answered, p.times)
	}
	return b.String()
}
