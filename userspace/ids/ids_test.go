package ids

import "testing"

func TestParseTableKey(t *testing.T) {
	for in, want := range map[string]string{
		"profile:sticky":        "sticky",
		"profile:sticky/vs:web": "sticky",
		"sticky":                "",
		"profile:":              "",
	} {
		k, err := ParseTableKey(in)
		if got := k.Profile; got != want || (want == "") != (err != nil) {
			t.Errorf("ParseTableKey(%q) = %q, %v; want profile %q", in, got, err, want)
		}
	}
}

// The stored form is what the pinned metadata and mirroring peers carry.
func TestTableKeyRoundTrip(t *testing.T) {
	for _, k := range []TableKey{SharedTable("sticky"), TableOf("sticky", false, "web"), TableOf("p", true, "ignored")} {
		s := k.String()
		back, err := ParseTableKey(s)
		if err != nil || back != k {
			t.Errorf("%#v -> %q -> %#v, %v", k, s, back, err)
		}
	}
	if got := TableOf("sticky", false, "web").String(); got != "profile:sticky/vs:web" {
		t.Errorf("private key = %q", got)
	}
	if got := SharedTable("sticky").String(); got != "profile:sticky" {
		t.Errorf("shared key = %q", got)
	}
}
