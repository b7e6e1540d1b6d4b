// Package openapi holds the OpenAPI 3.1 document of a node's HTTP API
// (openapi.json, embedded): the client API under /v1, the operator API
// under /admin/v1 and the operations routes, with every request body,
// query parameter, answer and error code. Nodes serve it at GET
// /openapi.json on both listeners; node/openapi_test.go drives a running
// node through every route and error code in it and validates each real
// request and answer against it.
//
// It holds bytes only: the validator is a test dependency.
package openapi

import _ "embed"

//go:embed openapi.json
var document []byte

// JSON returns the document. Callers must not modify it.
func JSON() []byte { return document }
