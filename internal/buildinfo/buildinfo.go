// Package buildinfo holds the version stamped into the binary at link time.
package buildinfo

import "runtime"

// Version is set with -ldflags "-X github.com/csmh-sync/csmh-sync/internal/buildinfo.Version=v1.2.3".
var Version = "dev"

// GoVersion is the toolchain that built the binary.
func GoVersion() string { return runtime.Version() }
