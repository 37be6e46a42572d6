// Package docs holds the service's documents that the binary serves: the
// OpenAPI description of the HTTP API (openapi.yaml), the AsyncAPI
// description of its NATS messages (asyncapi.yaml) and the JSON Schemas both
// refer to (schemas/*.json), served by internal/httpapi under /api/v1/. It
// holds data only and imports nothing of the service.
package docs

import (
	"embed"
	"io/fs"
)

// OpenAPI is docs/openapi.yaml, the OpenAPI 3.1 description of the HTTP API.
//
//go:embed openapi.yaml
var OpenAPI []byte

// AsyncAPI is docs/asyncapi.yaml, the AsyncAPI 3.0 description of the
// commands, events and dead letters on NATS.
//
//go:embed asyncapi.yaml
var AsyncAPI []byte

//go:embed schemas/*.json
var schemas embed.FS

// Schemas holds docs/schemas/*.json, the JSON Schemas (2020-12) of every
// message, by file name ("command.json"); the documents refer to them as
// schemas/<name>.
var Schemas = func() fs.FS {
	sub, err := fs.Sub(schemas, "schemas")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	return sub
}()
