package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMetricsAuth(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	tok := filepath.Join(dir, "tok")
	short := filepath.Join(dir, "short")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	os.WriteFile(tok, []byte("0123456789abcdef0123\n"), 0o644)
	os.WriteFile(short, []byte("abc"), 0o600)
	base := "pools: [{name: p, members: [{name: m, address: 10.0.0.1}]}]\nvirtual_servers: [{name: v, address: 10.0.0.9, port: 80, protocol: tcp, pool: p}]\n"
	for _, tc := range []struct {
		settings, err, warn string
	}{
		{"metrics_listen: 127.0.0.1:9469", "", ""},
		{"metrics_listen: 0.0.0.0:9469", "", "not a loopback address and settings.metrics_auth is not set"},
		{"metrics_listen: 0.0.0.0:9469\n  metrics_auth: {type: basic, username: ops, password_file: " + pw + "}", "", ""},
		{"metrics_listen: 0.0.0.0:9469\n  metrics_auth: {type: bearer, token_file: " + tok + "}", "", "readable by every user"},
		{"metrics_auth: {type: basic, username: ops, password_file: " + pw + "}", "settings.metrics_auth: guards settings.metrics_listen, which is not set", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: digest}", `settings.metrics_auth.type: "digest" must be basic or bearer`, ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: basic, password_file: " + pw + "}", "settings.metrics_auth.username", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: basic, username: 'a:b', password_file: " + pw + "}", "without ':'", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: basic, username: ops}", "settings.metrics_auth.password_file: is required", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: basic, username: ops, password_file: rel/pw}", "must be an absolute path", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: basic, username: ops, password_file: /nonexistent/pw}", "cannot read", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: bearer, token_file: " + short + "}", "at least 16 are required", ""},
		{"metrics_listen: 127.0.0.1:1\n  metrics_auth: {type: bearer, token_file: " + tok + ", username: ops}", "apply to type basic", ""},
	} {
		cfg, err := Parse([]byte("settings:\n  " + tc.settings + "\n" + base))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.settings, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.settings, err)
			continue
		}
		w := strings.Join(cfg.Warnings(), "\n")
		if (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
			t.Errorf("%q: warnings %q, want %q", tc.settings, w, tc.warn)
		}
	}
}
