// Package api holds Tollgate's OpenAPI 3.1 document (openapi.json): the
// billing API, the admin API and the proxy's own endpoints. billing serves it
// at /openapi.json; billing's tests validate real responses against it, and
// check that every route billing registers is in it, so that the document and
// the code cannot drift apart. It imports nothing.
package api

import _ "embed"

// OpenAPI is the document, as committed.
//
//go:embed openapi.json
var OpenAPI []byte
