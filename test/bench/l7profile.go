package bench

import _ "embed"

// l7ProfileBefore is the top of limpet l7's profiles before issue 15,
// taken with the same harness (make bench-l7) on the proxy built on
// httputil.ReverseProxy and http.Transport: the starting point of the
// rewrite, kept in the report for comparison.
//
//go:embed l7_profile_before.md
var l7ProfileBefore string
