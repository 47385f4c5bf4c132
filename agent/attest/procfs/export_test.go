package procfs

// Runs returns how many scans s has run, for tests.
func (s *Scanner) Runs() int64 { return s.runs.Load() }
