package lab

import "net/netip"

// CreatedRuns exposes the suffixes of the labs this process created to the
// external lab_test package, for its leftover check.
func CreatedRuns() []string {
	createdRuns.Lock()
	defer createdRuns.Unlock()
	return append([]string(nil), createdRuns.list...)
}

// Normalize exposes Spec.normalize (defaults and validation) to lab_test.
func (s *Spec) Normalize() error { return s.normalize() }

// V6 exposes the lab's IPv6 addressing rule to lab_test.
func V6(c, d int) netip.Addr { return v6(c, d) }

// SuffixOf exposes suffixOf to lab_test.
func SuffixOf(name string) string { return suffixOf(name) }

// SysctlRead exposes sysctlRead to lab_test.
func SysctlRead(key string) (string, error) { return sysctlRead(key) }

// SimulateCrashedOwner makes the lab's processes outlive this process, as
// when the lab's owner crashes (see noPdeathsig).
func SimulateCrashedOwner() { noPdeathsig = true }

// ForceCleanRun removes one run's lab whoever owns it.
func ForceCleanRun(sfx string) error { return clean(true, sfx) }
