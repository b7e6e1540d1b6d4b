package node

import (
	"redrain/spend"
)

// spendBooker is the booking of the spending routes: Config.Moves when
// set (tests), else the node's Booker (Move and Accounts).
func (n *Node) spendBooker() spend.Booker {
	if n.cfg.Moves != nil {
		return n.cfg.Moves
	}
	return n.booker
}
