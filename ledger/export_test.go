package ledger

// AppendPageV2 and MarshalAccountV2 write the versions before monthly
// summaries, as the store and older nodes hold them.
func AppendPageV2(dst []byte, p *Page) []byte { return appendPage(dst, p, pageVersion2) }

// AppendPageV3 writes the version before derived trade numbers: each
// entry's whole.
func AppendPageV3(dst []byte, p *Page) []byte { return appendPage(dst, p, pageVersion3) }

func MarshalAccountV2(dst []byte, a *Account) []byte { return marshalAccount(dst, a, accountVersion2) }

// HasRare reports whether a holds its rare fields (archived keys, the
// limit-key index, a sealed chunk, months pending).
func (a *Account) HasRare() bool { return a.rare != nil }
