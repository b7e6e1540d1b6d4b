// Package layout holds no code. Its test enforces the import rules of the
// file map in DESIGN.md (the "must never" column): which packages may not
// reach which libraries or which other packages of redrain, so that a pure
// core stays pure and the load generator stays a plain client.
package layout
