// Package depgraph holds no code: its test asserts wharf's package
// dependency graph (cmd -> gateway -> acme/auth/policy/backend; backends
// import no auth, TLS or gateway), as go-containerregistry's depcheck does.
package depgraph
