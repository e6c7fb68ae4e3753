package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// cmdVersion prints "wharf <version> (commit <rev>, <go version>, <os/arch>)".
// The commit comes from -ldflags, else from the VCS stamp Go records in the
// binary; a build from a tree with local changes says so.
func cmdVersion(stdout io.Writer) int {
	fmt.Fprintf(stdout, "wharf %s (commit %s, %s, %s/%s)\n", versionString(), commitString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}

// commitString is the commit the binary was built from, "unknown" if
// neither -ldflags nor Go's VCS stamp says.
func commitString() string {
	if commit != "" {
		return commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev + dirty
}
