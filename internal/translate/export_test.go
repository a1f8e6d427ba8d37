package translate

// SetAssembly turns assembling VirtualDestination upstreams from parts (vdsplit.go) on or
// off, for tests that compare it with the full path. Tests that call it must not run in
// parallel with other translations.
func SetAssembly(on bool) { noAssembly.Store(!on) }
