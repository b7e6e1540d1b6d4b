package bench

import (
	"errors"
	"testing"
)

func TestParseMix(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Mix
		ok   bool
	}{
		{"grants=70,spend=20,withdraw=10", Mix{70, 20, 10}, true},
		{"withdraw=1", Mix{0, 0, 1}, true},
		{" spend=3 , grants=1", Mix{1, 3, 0}, true},
		{"grants=0,spend=0", Mix{}, false},
		{"grants=70,grants=1", Mix{}, false},
		{"grant=70", Mix{}, false},
		{"grants=-1,spend=2", Mix{}, false},
		{"grants", Mix{}, false},
		{"", Mix{}, false},
	} {
		got, err := ParseMix(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseMix(%q) = %+v, %v; want %+v, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestMixOutcome: insufficient funds (and a refund beyond its consumption)
// are normal answers; a 5xx, another 4xx, a withdrawal with no final or
// pending state, and a transport error are not.
func TestMixOutcome(t *testing.T) {
	for _, c := range []struct {
		op     int
		status int
		body   string
		err    error
		want   string
		normal bool
	}{
		{opGrant, 200, `{"status":"issued"}`, nil, "200", true},
		{opConsume, 409, `{"code":"insufficient_funds"}`, nil, "409 insufficient_funds", true},
		{opRefund, 409, `{"code":"refund_exceeds"}`, nil, "409 refund_exceeds", true},
		{opConsume, 409, `{"code":"refund_exceeds"}`, nil, "409 refund_exceeds", false},
		{opTransfer, 409, `{"code":"request_id_reused"}`, nil, "409 request_id_reused", false},
		{opWithdraw, 200, `{"state":"settled"}`, nil, "200 settled", true},
		{opWithdraw, 200, `{"state":"reversed"}`, nil, "200 reversed", true},
		{opWithdraw, 202, `{"state":"paying"}`, nil, "202 paying", true},
		{opWithdraw, 200, `{"state":"held"}`, nil, "200 held", false},
		{opGrant, 202, `{}`, nil, "202", false},
		{opRecharge, 503, `{"code":"unavailable"}`, nil, "503 unavailable", false},
		{opRecharge, 403, `{"code":"forbidden"}`, nil, "403 forbidden", false},
		{opWithdraw, 0, ``, errors.New("connection reset"), "transport", false},
	} {
		got, normal := mixOutcome(c.op, c.status, []byte(c.body), c.err)
		if got != c.want || normal != c.normal {
			t.Errorf("%s %d %s: %q %v, want %q %v", opNames[c.op], c.status, c.body, got, normal, c.want, c.normal)
		}
	}
}

func TestMixConfigValidate(t *testing.T) {
	ok := MixConfig{Run: Config{Targets: []string{"http://127.0.0.1:8080"}, Users: 10}, Workers: 4}
	if err := ok.Validate(); err != nil {
		t.Fatalf("%+v: %v", ok, err)
	}
	for name, c := range map[string]MixConfig{
		"workers above users": {Run: ok.Run, Workers: 11},
		"rains":               {Run: ok.Run, Workers: 4, Rains: MixRainsMax + 1},
		"rate":                {Run: Config{Targets: ok.Run.Targets, Users: 10, Rate: 5}, Workers: 4},
		"negative weight":     {Run: ok.Run, Workers: 4, Mix: Mix{Grants: -1, Spend: 2}},
		"prefix":              {Run: Config{Targets: ok.Run.Targets, Users: 10, UserPrefix: "u/"}, Workers: 4},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: %+v valid", name, c)
		}
	}
}
