// Package schema publishes the schema of what redrain writes for others to
// read: grant.proto, the grant topic's records as protocol buffers
// (message redrain.v1.GrantRecord; ledger writes and reads it by hand, and
// its tests check the two agree). `redrain grants schema` prints it.
package schema

import _ "embed"

// GrantProto is the text of grant.proto.
//
//go:embed grant.proto
var GrantProto string
