// Package docs holds the service's documents that the binary serves: the
// OpenAPI description of the HTTP API (openapi.yaml, served by internal/httpapi
// at /api/v1/openapi.yaml). It holds data only and imports nothing of the
// service.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml, the OpenAPI 3.1 description of the HTTP API.
//
//go:embed openapi.yaml
var OpenAPI []byte
