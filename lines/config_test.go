package lines_test

import (
	"errors"
	"strings"
	"testing"

	"redrain/lines"
)

func TestValidate(t *testing.T) {
	good := func() lines.Line { return lines.Line{ID: "games", PullURL: "http://games.internal/assets", Rate: 50} }
	ls := []lines.Line{good()}
	if err := lines.Validate(ls); err != nil {
		t.Fatalf("Validate(%+v) = %v", ls, err)
	}
	if l := ls[0]; l.Burst != 50 || l.Concurrency != lines.ConcurrencyDefault || l.Window() != lines.WindowDefault || l.Timeout() != lines.TimeoutDefault {
		t.Errorf("defaults: %+v", l)
	}
	if err := lines.Validate(nil); err != nil {
		t.Errorf("Validate(none) = %v, want nil", err)
	}
	for _, tc := range []struct {
		name string
		edit func(l *lines.Line)
		want string
	}{
		{"empty id", func(l *lines.Line) { l.ID = "" }, "id"},
		{"upper case id", func(l *lines.Line) { l.ID = "Games" }, "id"},
		{"slash in id", func(l *lines.Line) { l.ID = "a/b" }, "id"},
		{"long id", func(l *lines.Line) { l.ID = strings.Repeat("a", 33) }, "id"},
		{"no url", func(l *lines.Line) { l.PullURL = "" }, "pull_url"},
		{"ftp url", func(l *lines.Line) { l.PullURL = "ftp://x/y" }, "pull_url"},
		{"relative url", func(l *lines.Line) { l.PullURL = "/assets" }, "pull_url"},
		{"url with query", func(l *lines.Line) { l.PullURL = "http://x/a?b=1" }, "pull_url"},
		{"url with user", func(l *lines.Line) { l.PullURL = "http://u:p@x/a" }, "pull_url"},
		{"no rate", func(l *lines.Line) { l.Rate = 0 }, "rate"},
		{"negative rate", func(l *lines.Line) { l.Rate = -1 }, "rate"},
		{"huge rate", func(l *lines.Line) { l.Rate = 2e6 }, "rate"},
		{"negative burst", func(l *lines.Line) { l.Burst = -1 }, "burst"},
		{"huge concurrency", func(l *lines.Line) { l.Concurrency = lines.ConcurrencyMax + 1 }, "concurrency"},
		{"negative window", func(l *lines.Line) { l.WindowMs = -5 }, "window_ms"},
		{"day-long timeout", func(l *lines.Line) { l.TimeoutMs = 86_400_000 }, "timeout_ms"},
	} {
		l := good()
		tc.edit(&l)
		err := lines.Validate([]lines.Line{l})
		if !errors.Is(err, lines.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want ErrInvalid naming %s", tc.name, err, tc.want)
		}
	}
	if err := lines.Validate([]lines.Line{good(), good()}); !errors.Is(err, lines.ErrInvalid) || !strings.Contains(err.Error(), "twice") {
		t.Errorf("two lines of one id: %v, want ErrInvalid", err)
	}
	many := make([]lines.Line, lines.LinesMax+1)
	if err := lines.Validate(many); !errors.Is(err, lines.ErrInvalid) {
		t.Errorf("%d lines: %v, want ErrInvalid", len(many), err)
	}
}

func TestParseAnswer(t *testing.T) {
	got, err := lines.ParseAnswer([]byte(` {"assets":[{"id":"gold","name":"Gold","amount":-3},{"id":"gem","name":"","amount":9007199254740993}]} `))
	if err != nil || len(got) != 2 || got[0] != (lines.Asset{ID: "gold", Name: "Gold", Amount: -3}) || got[1].Amount != 9007199254740993 {
		t.Fatalf("ParseAnswer = %+v, %v", got, err)
	}
	if got, err := lines.ParseAnswer([]byte(`{"assets":[]}`)); err != nil || got == nil || len(got) != 0 {
		t.Errorf("ParseAnswer(no assets) = %#v, %v, want an empty list", got, err)
	}
	for _, bad := range []string{
		``, `[]`, `{}`, `{"assets":null}`, `{"assets":[{"id":"a","amount":1.5}]}`,
		`{"assets":[{"id":"a","amount":99999999999999999999}]}`, `{"assets":[{"id":"","amount":1}]}`,
		`{"assets":[{"id":"a","amount":1}],"more":1}`, `{"assets":[{"id":"a","amount":1,"x":2}]}`,
		`{"assets":[{"id":"a","amount":1},{"id":"a","amount":2}]}`, `{"assets":[]} {}`,
		`{"assets":[{"id":"` + strings.Repeat("a", 65) + `","amount":1}]}`,
		`{"assets":[{"id":"a","name":"` + strings.Repeat("n", 129) + `","amount":1}]}`,
		`{"assets":[` + strings.Repeat(`{"id":"a","amount":1},`, lines.AssetsMax) + `{"id":"b","amount":1}]}`,
	} {
		if got, err := lines.ParseAnswer([]byte(bad)); err == nil {
			t.Errorf("ParseAnswer(%.80s) = %+v, want an error", bad, got)
		}
	}
}

func FuzzParseAnswer(f *testing.F) {
	f.Add([]byte(`{"assets":[{"id":"gold","name":"Gold","amount":1}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := lines.ParseAnswer(body)
		if err != nil {
			return
		}
		if len(got) > lines.AssetsMax {
			t.Fatalf("%d assets accepted", len(got))
		}
		seen := map[string]bool{}
		for _, a := range got {
			if a.ID == "" || seen[a.ID] {
				t.Fatalf("asset id %q accepted empty or twice", a.ID)
			}
			seen[a.ID] = true
		}
	})
}
