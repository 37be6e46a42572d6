// Package asyncapi checks docs/asyncapi.yaml with the official AsyncAPI
// parser (@asyncapi/parser, run with node: validate.mjs, dependencies
// pinned by package-lock.json; `make test` runs `npm ci` here). It holds
// the test only.
package asyncapi
