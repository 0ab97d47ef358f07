// Package residency lowers the part of a process's resident set that is the
// executable itself. Start-up (package initialisation, flag parsing, loading
// certificates and the first snapshot) touches code and tables all over the
// binary, and the kernel maps each touched page together with its cached
// neighbours (fault-around), so a freshly started sidecar shows most of its
// executable as resident although serving traffic needs a fraction of it.
// ReleaseExecutable unmaps those read-only pages once; the ones serving needs
// come back by minor faults from the page cache, which sidecars running the
// same image share.
//
// It must never touch writable mappings or pages the process has written
// (private copies): dropping those would lose data.
package residency

// ReleaseExecutable unmaps the executable's read-only, unmodified pages from
// this process and returns how many bytes of address space it released. The
// pages stay in the page cache. Where it is not supported it does nothing.
func ReleaseExecutable() (int, error) { return releaseExecutable() }
