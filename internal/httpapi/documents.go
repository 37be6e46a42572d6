package httpapi

import (
	"io/fs"
	"net/http"
	"path"

	"github.com/labstack/echo/v5"

	"github.com/campaign-orchestrator/orchestrator/docs"
	"github.com/campaign-orchestrator/orchestrator/internal/events"
)

// Media types of the served documents.
const (
	mimeYAML       = "application/yaml"
	mimeJSONSchema = "application/schema+json"
)

// openAPI serves docs/openapi.yaml.
func (s *Server) openAPI(c *echo.Context) error {
	return c.Blob(http.StatusOK, mimeYAML, docs.OpenAPI)
}

// asyncAPI serves docs/asyncapi.yaml.
func (s *Server) asyncAPI(c *echo.Context) error {
	return c.Blob(http.StatusOK, mimeYAML, docs.AsyncAPI)
}

// schema serves docs/schemas/<name>, the JSON Schemas the two documents
// refer to as schemas/<name> (relative to /api/v1/).
func (s *Server) schema(c *echo.Context) error {
	name := c.Param("name")
	if name != path.Base(name) || path.Ext(name) != ".json" {
		return errorf(CodeNotFound, "name", "no schema %s", events.QuoteBounded(name))
	}
	b, err := fs.ReadFile(docs.Schemas, name)
	if err != nil {
		return errorf(CodeNotFound, "name", "no schema %s", events.QuoteBounded(name))
	}
	return c.Blob(http.StatusOK, mimeJSONSchema, b)
}
