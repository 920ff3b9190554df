package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"LB", "JSESSIONID", "a-b_c.d", "X!#$%&'*+^`|~"} {
		if !ValidName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", "a b", "a;b", "a=b", "a,b", "é", strings.Repeat("a", 65), "a\tb", `a"b`} {
		if ValidName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseKey(t *testing.T) {
	raw := make([]byte, CookieKeySize)
	for i := range raw {
		raw[i] = byte(200 + i) // not printable: a raw key file
	}
	for name, in := range map[string][]byte{
		"raw":         raw,
		"std b64":     []byte(base64.StdEncoding.EncodeToString(raw) + "\n"),
		"raw url b64": []byte(base64.RawURLEncoding.EncodeToString(raw)),
		"hex":         []byte("  " + hex.EncodeToString(raw) + "\r\n"),
	} {
		k, err := ParseKey(in)
		if err != nil || !bytes.Equal(k, raw) {
			t.Errorf("%s: %x %v", name, k, err)
		}
	}
	for name, in := range map[string][]byte{
		"empty":       nil,
		"short b64":   []byte(base64.StdEncoding.EncodeToString(raw[:16])),
		"32 hex text": []byte(hex.EncodeToString(raw[:16])),
		"garbage":     []byte("not a key at all!"),
	} {
		if _, err := ParseKey(in); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestLoadKeyFile(t *testing.T) {
	key := bytes.Repeat([]byte{1}, CookieKeySize)
	dir := t.TempDir()
	f := filepath.Join(dir, "k")
	os.WriteFile(f, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
	if k, err := LoadKeyFile(f); err != nil || !bytes.Equal(k, key) {
		t.Fatalf("%x %v", k, err)
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := LoadKeyFile(dir); err == nil {
		t.Error("directory accepted")
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("A"), 5000), 0o600)
	if _, err := LoadKeyFile(big); err == nil {
		t.Error("oversized file accepted")
	}
}
