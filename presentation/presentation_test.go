package presentation

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// slot returns a valid slot object with fields replaced or added by kv
// (pairs of name and raw JSON value; a value "" drops the field).
func slot(kv ...string) string {
	fields := []string{"id", `"cash"`, "asset", `"cash"`, "name", `"Cash"`, "copy", `"Withdraw any time"`,
		"link", `"https://wallet.example.com/cash?from=rain"`, "icon", `"https://cdn.example.com/i/cash.png"`}
	for i := 0; i < len(kv); i += 2 {
		found := false
		for j := 0; j < len(fields); j += 2 {
			if fields[j] == kv[i] {
				fields[j+1], found = kv[i+1], true
			}
		}
		if !found {
			fields = append(fields, kv[i], kv[i+1])
		}
	}
	var b []string
	for j := 0; j < len(fields); j += 2 {
		if fields[j+1] != "" {
			b = append(b, fmt.Sprintf("%q:%s", fields[j], fields[j+1]))
		}
	}
	return "{" + strings.Join(b, ",") + "}"
}

func doc(slots ...string) string { return `{"slots":[` + strings.Join(slots, ",") + `]}` }

func TestParse(t *testing.T) {
	many := make([]string, SlotsMax+1)
	for i := range many {
		many[i] = slot("id", fmt.Sprintf(`"s%d"`, i), "asset", fmt.Sprintf(`"coin:c%d"`, i))
	}
	for _, c := range []struct {
		name string
		raw  string
		err  error  // nil: valid
		msg  string // a substring of the error
	}{
		{"one slot", doc(slot()), nil, ""},
		{"every kind of target", doc(slot(), slot("id", `"coins"`, "asset", `"coin:*"`), slot("id", `"gold"`, "asset", `"coin:gold"`),
			slot("id", `"items"`, "asset", `"item:*"`), slot("id", `"card"`, "asset", `"item:card-1"`),
			slot("id", `"mall"`, "asset", "", "line", `"mall_points"`)), nil, ""},
		{"minimal slot", doc(`{"id":"a","asset":"cash","name":"现金"}`), nil, ""},
		{"hidden slot", doc(slot("hidden", "true")), nil, ""},
		{"the most slots", doc(many[:SlotsMax]...), nil, ""},

		{"not JSON", `{"slots":[`, ErrMalformed, "unexpected EOF"},
		{"unknown top field", `{"slots":[],"extra":1}`, ErrMalformed, `unknown field "extra"`},
		{"unknown slot field", doc(slot("colour", `"red"`)), ErrMalformed, `unknown field "colour"`},
		{"wrong type", doc(slot("name", "7")), ErrMalformed, "cannot unmarshal number"},
		{"trailing data", doc(slot()) + ` {}`, ErrMalformed, "trailing data"},
		{"null document", `null`, ErrInvalid, "no slots"},

		{"no slots", `{"slots":[]}`, ErrInvalid, "no slots"},
		{"too many slots", doc(many...), ErrInvalid, "33 slots, at most 32"},
		{"duplicate id", doc(slot(), slot("asset", `"coin:*"`)), ErrInvalid, `slots[1]: id "cash" is slots[0]'s too`},
		{"duplicate asset", doc(slot(), slot("id", `"cash2"`)), ErrInvalid, `slots[1] ("cash2"): asset cash is shown by slots[0] already`},
		{"duplicate line", doc(slot("id", `"a"`, "asset", "", "line", `"mall"`), slot("id", `"b"`, "asset", "", "line", `"mall"`)), ErrInvalid, "line mall is shown by slots[0]"},
		{"empty id", doc(slot("id", `""`)), ErrInvalid, `id "": want 1-64`},
		{"id with a slash", doc(slot("id", `"a/b"`)), ErrInvalid, `id "a/b"`},
		{"asset and line", doc(slot("line", `"mall"`)), ErrInvalid, `exactly one of "asset" and "line"`},
		{"neither asset nor line", doc(slot("asset", "")), ErrInvalid, `exactly one of "asset" and "line"`},
		{"unknown asset kind", doc(slot("asset", `"gems:red"`)), ErrInvalid, `asset "gems:red"`},
		{"asset of no currency", doc(slot("asset", `"coin:"`)), ErrInvalid, `asset "coin:"`},
		{"cash wildcard", doc(slot("asset", `"cash:*"`)), ErrInvalid, `asset "cash:*"`},
		{"currency with underscore", doc(slot("asset", `"coin:a_b"`)), ErrInvalid, `asset "coin:a_b"`},
		{"bad line", doc(slot("asset", "", "line", `"mall points"`)), ErrInvalid, `line "mall points"`},
		{"no name", doc(slot("name", "")), ErrInvalid, "name of 0 characters, want 1-32"},
		{"long name", doc(slot("name", `"`+strings.Repeat("名", 33)+`"`)), ErrInvalid, "name of 33 characters, want 1-32"},
		{"long copy", doc(slot("copy", `"`+strings.Repeat("x", 201)+`"`)), ErrInvalid, "copy of 201 characters, want 0-200"},
		{"copy with a line break", doc(slot("copy", `"a\nb"`)), ErrInvalid, "copy: control character"},
		{"name with spaces around", doc(slot("name", `" Cash"`)), ErrInvalid, "leading or trailing space"},
		{"http link", doc(slot("link", `"http://wallet.example.com/"`)), ErrInvalid, "link \"http://wallet.example.com/\": want an https URL"},
		{"javascript link", doc(slot("link", `"javascript:alert(1)"`)), ErrInvalid, "want an https URL"},
		{"relative link", doc(slot("link", `"/cash"`)), ErrInvalid, "want an https URL"},
		{"icon without host", doc(slot("icon", `"https:///i.png"`)), ErrInvalid, "icon \"https:///i.png\": no host"},
		{"icon with user info", doc(slot("icon", `"https://u:p@cdn.example.com/i.png"`)), ErrInvalid, "user info"},
		{"link with a space", doc(slot("link", `"https://a.example.com/x y"`)), ErrInvalid, "not printable ASCII"},
		{"link not ASCII", doc(slot("link", `"https://a.example.com/钱"`)), ErrInvalid, "not printable ASCII"},
		{"long link", doc(slot("link", `"https://a.example.com/`+strings.Repeat("x", 1024)+`"`)), ErrInvalid, "link of 1046 bytes, at most 1024"},
		{"bad URL", doc(slot("link", `"https://a.example.com:port/"`)), ErrInvalid, "link: parse"},
		{"hidden slot still checked", doc(slot(), slot("id", `"x"`, "asset", `"coin:*"`, "link", `"http://x"`, "hidden", "true")), ErrInvalid, "slots[1]"},
	} {
		d, err := Parse([]byte(c.raw))
		switch {
		case c.err == nil && err != nil:
			t.Errorf("%s: Parse(%.120s) = %v, want valid", c.name, c.raw, err)
		case c.err == nil && d == nil:
			t.Errorf("%s: Parse = nil document", c.name)
		case c.err != nil && (!errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg)):
			t.Errorf("%s: Parse(%.120s) = %v, want %v with %q", c.name, c.raw, err, c.err, c.msg)
		}
	}
}

// TestExampleFile: examples/presentation.json, which the README and
// `redrain admin -h` name, is a valid document.
func TestExampleFile(t *testing.T) {
	raw, err := os.ReadFile("../examples/presentation.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Compile(raw, 1)
	if err != nil {
		t.Fatalf("examples/presentation.json: %v", err)
	}
	if got := strings.Count(string(v.Slots()), `"id"`); got != 3 {
		t.Errorf("examples/presentation.json shows %d slots, want 3 (one is hidden)", got)
	}
}

func mustCompile(t testing.TB, raw string, version uint64) *Version {
	t.Helper()
	v, err := Compile([]byte(raw), version)
	if err != nil {
		t.Fatalf("Compile(%s): %v", raw, err)
	}
	return v
}

func TestCompileShowsVisibleSlotsInOrder(t *testing.T) {
	v := mustCompile(t, doc(
		`{"id":"b","line":"mall","name":"Mall <points>","copy":"R&D"}`,
		`{"id":"a","asset":"cash","name":"Cash","link":"https://w.example.com/c","icon":"https://i.example.com/c.png"}`,
		`{"id":"h","asset":"coin:*","name":"Coins","hidden":true}`), 4)
	want := `[{"id":"b","line":"mall","name":"Mall \u003cpoints\u003e","copy":"R\u0026D"},` +
		`{"id":"a","asset":"cash","name":"Cash","link":"https://w.example.com/c","icon":"https://i.example.com/c.png"}]`
	if got := string(v.Slots()); got != want || v.Version != 4 {
		t.Errorf("compiled v%d = %s, want v4 %s", v.Version, got, want)
	}
	if !json.Valid(v.Slots()) {
		t.Error("compiled slots are not JSON")
	}
	if _, err := Compile([]byte(doc(slot("link", `"http://x"`))), 5); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "version 5") {
		t.Errorf("Compile of an invalid version = %v, want ErrInvalid naming version 5", err)
	}
}

func TestForCanaryAndLive(t *testing.T) {
	var p Presentation
	if slots, v := p.For(1); string(slots) != "[]" || v != 0 {
		t.Errorf("zero Presentation: For = %s v%d, want [] v0", slots, v)
	}
	live := mustCompile(t, doc(slot()), 1)
	canary := mustCompile(t, doc(slot(), slot("id", `"coins"`, "asset", `"coin:*"`)), 2)
	for _, c := range []struct {
		name         string
		live, canary *Version
		users        []uint64
		want         map[uint64]uint64 // act_id -> version
	}{
		{"nothing published", nil, nil, nil, map[uint64]uint64{1: 0, 7: 0}},
		{"live only", live, nil, nil, map[uint64]uint64{1: 1, 7: 1}},
		{"canary and live", live, canary, []uint64{7, 9}, map[uint64]uint64{1: 1, 7: 2, 9: 2, 8: 1}},
		{"canary before any live", nil, canary, []uint64{7}, map[uint64]uint64{1: 0, 7: 2}},
		{"canary without users", live, canary, nil, map[uint64]uint64{7: 1}},
	} {
		p.Set(c.live, c.canary, c.users)
		for act, want := range c.want {
			slots, v := p.For(act)
			wantSlots := "[]"
			switch want {
			case 1:
				wantSlots = string(live.Slots())
			case 2:
				wantSlots = string(canary.Slots())
			}
			if v != want || string(slots) != wantSlots {
				t.Errorf("%s: For(%d) = %s v%d, want %s v%d", c.name, act, slots, v, wantSlots, want)
			}
		}
	}
	// The array is shared: an append by one caller copies it.
	p.Set(live, nil, nil)
	slots, _ := p.For(1)
	_ = append(slots, ',')
	if again, _ := p.For(1); string(again) != string(live.Slots()) {
		t.Errorf("an append changed the served array: %s", again)
	}
	if l, c := p.Served(); l != 1 || c != 0 {
		t.Errorf("Served = %d, %d; want 1, 0", l, c)
	}
}

func TestForAllocatesNothing(t *testing.T) {
	var p Presentation
	p.Set(mustCompile(t, doc(slot()), 1), mustCompile(t, doc(slot("name", `"Canary"`)), 2), []uint64{7})
	var n int
	allocs := testing.AllocsPerRun(1000, func() {
		s1, _ := p.For(7)
		s2, _ := p.For(8)
		n += len(s1) + len(s2)
	})
	if allocs != 0 {
		t.Errorf("For allocates %.1f times a call pair, want 0", allocs)
	}
}

// TestForWhileSet: readers see one whole state or the next, never a mix
// (a canary user sees the canary's slots with the canary's version); run
// with -race.
func TestForWhileSet(t *testing.T) {
	var p Presentation
	versions := make([]*Version, 20)
	for i := range versions {
		versions[i] = mustCompile(t, doc(slot("name", fmt.Sprintf(`"v%d"`, i+1))), uint64(i+1))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				slots, v := p.For(uint64(r))
				if v == 0 {
					continue
				}
				if want := versions[v-1].Slots(); string(slots) != string(want) {
					t.Errorf("For(%d) = %s with version %d, want %s", r, slots, v, want)
					return
				}
			}
		})
	}
	for i := 1; i < len(versions); i++ {
		p.Set(versions[i-1], versions[i], []uint64{1, 3})
	}
	close(stop)
	wg.Wait()
}

func BenchmarkFor(b *testing.B) {
	var p Presentation
	p.Set(mustCompile(b, doc(slot()), 1), mustCompile(b, doc(slot("name", `"Canary"`)), 2), []uint64{7})
	b.ReportAllocs()
	var n int
	for b.Loop() {
		s, _ := p.For(8)
		n += len(s)
	}
	_ = n
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(doc(slot())))
	f.Add([]byte(doc(slot(), slot("id", `"m"`, "asset", "", "line", `"mall"`, "hidden", "true"))))
	f.Add([]byte(`{"slots":[{"id":"a","asset":"coin:*","name":"x","link":"https://a.b/c"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error %v is neither ErrMalformed nor ErrInvalid", err)
			}
			return
		}
		// What validates compiles, to JSON that reads back as valid slots.
		v, err := Compile(raw, 1)
		if err != nil {
			t.Fatalf("Parse accepted, Compile refused: %v", err)
		}
		var shown []Slot
		if err := json.Unmarshal(v.Slots(), &shown); err != nil {
			t.Fatalf("compiled slots %s: %v", v.Slots(), err)
		}
		if again := (&Document{Slots: shown}); len(shown) > 0 && again.Validate() != nil {
			t.Fatalf("shown slots of a valid document do not validate: %v", again.Validate())
		}
		_ = d
	})
}
