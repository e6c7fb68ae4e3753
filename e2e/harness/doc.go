// Package harness starts real peers for wharf's end-to-end tests: the wharf
// binary itself, Debian's docker-registry as a reference registry, a private
// dockerd, and the podman, skopeo and crane command-line clients. It also
// makes small random test images and checks that what a registry hands back
// is byte-for-byte what was pushed.
//
// Every test binary that uses the harness must route its TestMain through
// Main, so that the once-per-binary peers (the wharf build, dockerd) are torn
// down at the end:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
//
// Missing peers: when a tool is not installed the test is skipped with a loud
// message, unless CI is set, in which case the test fails. A green CI run
// therefore means every real-client test really ran.
//
// Environment knobs:
//
//	CI=true                  missing peers fail instead of skip
//	WHARF_BIN=/path/wharf    use this binary instead of building ./cmd/wharf
//	WHARF_E2E_RACE=1         build wharf with -race
//	WHARF_E2E_LOGS=1         always print server logs, not only on failure
package harness
