// Package docs holds the user-facing documentation of pharox-nats that
// lives outside the README: PROTOCOL.md, the wire protocol reference for
// people writing clients in other languages.
//
// The package has no code. Its tests keep the documentation true: they
// start a real worker on an embedded NATS server and check PROTOCOL.md
// against the subjects it serves, the JSON Schemas of package schemas and
// the error codes it returns, and they check every relative link of every
// Markdown file in the repository. The conventions PROTOCOL.md follows so
// that the tests can read it are listed in its last section, "About this
// document".
//
// The tests live here rather than in broker or schemas because they read
// the repository's Markdown files and span several packages (broker,
// schemas, the worker assembly); `go test ./docs` is the one place to run
// when the documentation changes.
package docs
