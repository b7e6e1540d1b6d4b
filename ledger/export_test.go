package ledger

// AppendPageV2 and MarshalAccountV2 write the versions before monthly
// summaries, as the store and older nodes hold them.
func AppendPageV2(dst []byte, p *Page) []byte { return appendPage(dst, p, pageVersion2) }

func MarshalAccountV2(dst []byte, a *Account) []byte { return marshalAccount(dst, a, accountVersion2) }
