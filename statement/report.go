package statement

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PeriodKind is a statement's length.
type PeriodKind uint8

// Periods: UTC days, calendar months and years.
const (
	PeriodDay PeriodKind = iota + 1
	PeriodMonth
	PeriodYear
)

var periodNames = [...]string{PeriodDay: "day", PeriodMonth: "month", PeriodYear: "year"}

func (k PeriodKind) String() string { return periodNames[k] }

// Period is the UTC days [From, To) of a statement.
type Period struct {
	Kind     PeriodKind
	Date     string // as given: 2026-12-05, 2026-12 or 2026
	From, To Day
}

var periodLayouts = [...]string{PeriodDay: time.DateOnly, PeriodMonth: "2006-01", PeriodYear: "2006"}

// ParsePeriod parses a period kind (day, month or year) and its date
// (YYYY-MM-DD, YYYY-MM or YYYY).
func ParsePeriod(kind, date string) (Period, error) {
	for k, n := range periodNames {
		if n == "" || n != kind {
			continue
		}
		t, err := time.Parse(periodLayouts[k], date)
		if err != nil || t.Format(periodLayouts[k]) != date || t.Year() < 1970 {
			return Period{}, fmt.Errorf("%w: %s date %q: want %s from 1970", ErrInput, kind, date, periodLayouts[k])
		}
		end := t.AddDate(0, 0, 1)
		switch PeriodKind(k) {
		case PeriodMonth:
			end = t.AddDate(0, 1, 0)
		case PeriodYear:
			end = t.AddDate(1, 0, 0)
		}
		return Period{Kind: PeriodKind(k), Date: date, From: DayOf(t.UnixMilli()), To: DayOf(end.UnixMilli())}, nil
	}
	return Period{}, fmt.Errorf("%w: period %q: want day, month or year", ErrInput, kind)
}

// String is the day as YYYY-MM-DD.
func (d Day) String() string { return time.UnixMilli(d.Start()).UTC().Format(time.DateOnly) }

// Statement is one party's statement of one period.
type Statement struct {
	Party  Party
	Period Period
	// Closed says every partition's journals of the period were folded
	// (T+1): the statement will not change.
	Closed bool
	Agg    Aggregate
}

// IsMoney says whether an asset counts fen (cash and its sub-accounts).
func IsMoney(asset string) bool { return asset == "cash" || strings.HasPrefix(asset, "cash:") }

// Yuan formats fen as yuan with two decimals, exactly (integer
// arithmetic): -1234 is "-12.34".
func Yuan(fen int64) string {
	u := uint64(fen)
	sign := ""
	if fen < 0 {
		u, sign = -u, "-"
	}
	return fmt.Sprintf("%s%d.%02d", sign, u/100, u%100)
}

type jsonLine struct {
	Section    string `json:"section"`
	Item       string `json:"item"`
	Asset      string `json:"asset"`
	Count      int64  `json:"count"`
	Amount     int64  `json:"amount"`
	AmountYuan string `json:"amount_yuan,omitempty"`
}

type jsonTotal struct {
	Asset       string `json:"asset"`
	Income      int64  `json:"income"`
	Other       int64  `json:"other"`
	Expenditure int64  `json:"expenditure"`
	Net         int64  `json:"net"`
	NetYuan     string `json:"net_yuan,omitempty"`
}

type jsonStatement struct {
	Party  string      `json:"party"`
	Period string      `json:"period"`
	Date   string      `json:"date"`
	From   string      `json:"from"`
	To     string      `json:"to"` // the last day, inclusive
	Closed bool        `json:"closed"`
	Lines  []jsonLine  `json:"lines"`
	Totals []jsonTotal `json:"totals"`
}

func yuanIf(asset string, fen int64) string {
	if IsMoney(asset) {
		return Yuan(fen)
	}
	return ""
}

// JSON is the statement as the API answers it: amounts in the asset's
// unit (fen for money) as integers, money also as exact yuan strings.
func (s *Statement) JSON() ([]byte, error) {
	js := jsonStatement{Party: s.Party.String(), Period: s.Period.Kind.String(), Date: s.Period.Date,
		From: s.Period.From.String(), To: (s.Period.To - 1).String(), Closed: s.Closed,
		Lines: []jsonLine{}, Totals: []jsonTotal{}}
	for _, l := range s.Agg.Lines {
		js.Lines = append(js.Lines, jsonLine{Section: l.Section.String(), Item: l.Item, Asset: l.Asset,
			Count: l.Count, Amount: l.Amount, AmountYuan: yuanIf(l.Asset, l.Amount)})
	}
	for _, t := range s.Agg.Totals() {
		js.Totals = append(js.Totals, jsonTotal{Asset: t.Asset, Income: t.Income, Other: t.Other,
			Expenditure: t.Expenditure, Net: t.Net, NetYuan: yuanIf(t.Asset, t.Net)})
	}
	return json.Marshal(js)
}

// CSVHeader is the header row of CSV statements.
var CSVHeader = []string{"party", "period", "date", "closed", "section", "item", "asset", "count", "amount", "amount_yuan"}

// CSV is the statement as RFC 4180 CSV: a header row, one row per line,
// then one row per asset with section "total" and the net.
func (s *Statement) CSV() []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.UseCRLF = true
	closed := strconv.FormatBool(s.Closed)
	row := func(section, item, asset string, count, amount int64) {
		_ = w.Write([]string{s.Party.String(), s.Period.Kind.String(), s.Period.Date, closed, section, item, asset,
			strconv.FormatInt(count, 10), strconv.FormatInt(amount, 10), yuanIf(asset, amount)})
	}
	_ = w.Write(CSVHeader)
	for _, l := range s.Agg.Lines {
		row(l.Section.String(), l.Item, l.Asset, l.Count, l.Amount)
	}
	for _, t := range s.Agg.Totals() {
		var n int64
		for _, l := range s.Agg.Lines {
			if l.Asset == t.Asset {
				n += l.Count
			}
		}
		row("total", "net", t.Asset, n, t.Net)
	}
	w.Flush()
	return b.Bytes()
}

// aggregateVersion is the first byte of an encoded Aggregate.
const aggregateVersion = 1

// AppendAggregate appends a's encoding (as the store keeps a day).
func AppendAggregate(dst []byte, a *Aggregate) []byte {
	dst = append(dst, aggregateVersion)
	dst = binary.AppendUvarint(dst, uint64(len(a.Lines)))
	for _, l := range a.Lines {
		dst = append(dst, byte(l.Section))
		dst = appendStr(dst, l.Item)
		dst = appendStr(dst, l.Asset)
		dst = binary.AppendVarint(dst, l.Amount)
		dst = binary.AppendVarint(dst, l.Count)
	}
	dst = binary.AppendUvarint(dst, uint64(len(a.Residual)))
	for _, r := range a.Residual {
		dst = appendStr(dst, r.Asset)
		dst = binary.AppendVarint(dst, r.Amount)
	}
	return dst
}

func appendStr(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// DecodeAggregate decodes what AppendAggregate wrote.
func DecodeAggregate(b []byte) (*Aggregate, error) {
	d := dec{b: b}
	if v := d.byte1(); d.err == nil && v != aggregateVersion {
		return nil, fmt.Errorf("statement: aggregate version %d", v)
	}
	a := &Aggregate{}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		l := Line{Section: Section(d.byte1()), Item: d.str(), Asset: d.str(), Amount: d.varint(), Count: d.varint()}
		if l.Section < Income || l.Section > Expenditure {
			d.err = fmt.Errorf("section %d", l.Section)
		}
		a.Lines = append(a.Lines, l)
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		a.Residual = append(a.Residual, AssetAmount{Asset: d.str(), Amount: d.varint()})
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("statement: aggregate: %w", d.err)
	}
	return a, nil
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) byte1() byte {
	if d.err != nil || len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("truncated")
	}
}

func (d *dec) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if d.err != nil || n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint() int64 {
	v, n := binary.Varint(d.b)
	if d.err != nil || n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *dec) str() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
