package config

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

var l7Key = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

// l7Config is a valid config with an http_cookie profile; profile and vs
// are extra YAML lines for the profile and the http virtual server.
func l7Config(profile, vs string) string {
	ind := func(s string) string {
		if s == "" {
			return ""
		}
		lines := strings.Split(strings.Trim(s, "\n"), "\n")
		for i := range lines {
			lines[i] = "    " + lines[i]
		}
		return strings.Join(lines, "\n") + "\n"
	}
	return `
persistence_profiles:
  - name: web
    type: http_cookie
` + ind(profile) + `
pools:
  - name: p
    members:
      - {name: a, address: 10.0.0.1, port: 8080}
virtual_servers:
  - name: site
    type: http
    address: 0.0.0.0
    port: 80
    pool: p
    persistence: web
` + ind(vs)
}

func l7Parse(t *testing.T, y string) (*Config, error) {
	t.Helper()
	return Parse([]byte(y))
}

func TestL7CookieDefaults(t *testing.T) {
	cfg, err := l7Parse(t, l7Config(`keys: [{base64: "`+l7Key+`"}]`, ""))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Profile("web")
	if *p.Timeout != 0 || p.Path != "/" || p.IsPersistentCookie || p.AlwaysSend || p.HTTPOnly || p.Secure != nil || p.SameSite != "" || p.ServerDown != ServerDownImmediate {
		t.Errorf("http_cookie defaults: %+v", p)
	}
	vs := cfg.VirtualServers[0]
	o := vs.HTTPOptions
	if *o.ReadHeaderTimeout != DefaultReadHeaderTimeout || *o.RequestTimeout != DefaultRequestTimeout || *o.IdleTimeout != DefaultIdleTimeout ||
		*o.WriteTimeout != DefaultWriteTimeout || *o.ConnectTimeout != DefaultConnectTimeout || *o.ServerTimeout != DefaultServerTimeout ||
		*o.TunnelTimeout != DefaultTunnelTimeout || *o.ShutdownTimeout != DefaultShutdownTimeout || o.MaxHeaderBytes != DefaultMaxHeaderBytes ||
		o.MaxIdleConnsPerMember != DefaultMaxIdlePerMember || *o.Retries != DefaultRetries || *o.MaxFails != DefaultMaxFails ||
		*o.FailTimeout != DefaultFailTimeout || o.ForwardedFor != ForwardedForAppend || o.AccessLog != AccessLogStdout || !*o.HTTP2 || o.TLSMinVersion != "" {
		t.Errorf("http listener defaults: %+v", o)
	}
	if p.CookieSecure(&vs) {
		t.Error("secure defaults off over plain HTTP")
	}
	if len(cfg.Warnings()) != 0 {
		t.Errorf("warnings: %q", cfg.Warnings())
	}
	keys, err := p.CookieKeys()
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], bytes.Repeat([]byte{7}, 32)) {
		t.Errorf("keys %x %v", keys, err)
	}
}

func TestL7AppCookieAndGenericDefaults(t *testing.T) {
	cfg, err := l7Parse(t, `
persistence_profiles:
  - {name: app, type: app_cookie, cookie_name: JSESSIONID}
  - {name: gen, type: generic, header_name: X-User}
pools: [{name: p, members: [{name: a, address: 10.0.0.1, port: 80}]}]
virtual_servers:
  - {name: one, type: http, address: 127.0.0.1, port: 80, pool: p, persistence: app}
  - {name: two, type: http, address: 127.0.0.1, port: 81, pool: p, persistence: gen}
`)
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Profile("app"); *a.Timeout != DefaultAppCookieTimeout || *a.MaxEntries != DefaultPersistEntries {
		t.Errorf("app_cookie defaults: timeout %d entries %d", *a.Timeout, *a.MaxEntries)
	}
	if g := cfg.Profile("gen"); *g.Timeout != DefaultGenericTimeout || *g.MaxEntries != DefaultPersistEntries {
		t.Errorf("generic defaults: timeout %d", *g.Timeout)
	}
}

func TestL7SecureDefaultsOnForHTTPS(t *testing.T) {
	dir := t.TempDir()
	cert, key := l7WriteCert(t, dir)
	cfg, err := l7Parse(t, l7Config(`keys: [{base64: "`+l7Key+`"}]`, "tls_cert_file: "+cert+"\ntls_key_file: "+key))
	if err != nil {
		t.Fatal(err)
	}
	vs := cfg.VirtualServers[0]
	if !cfg.Profile("web").CookieSecure(&vs) || !vs.TLS() || vs.TLSMinVersion != "1.2" {
		t.Errorf("https: secure %v tls %v min %q", cfg.Profile("web").CookieSecure(&vs), vs.TLS(), vs.TLSMinVersion)
	}
}

func TestL7KeyFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	os.WriteFile(good, []byte(l7Key+"\n"), 0o600)
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), 0o600)
	cfg, err := l7Parse(t, l7Config("keys:\n  - file: "+good+"\n  - base64: \""+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))+"\"", ""))
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := cfg.Profile("web").CookieKeys(); err != nil || len(keys) != 2 {
		t.Fatalf("%v %v", keys, err)
	}
	_, err = l7Parse(t, l7Config("keys:\n  - file: "+short+"\n  - file: "+filepath.Join(dir, "missing")+"\n  - file: relative.key\n  - {file: "+good+", base64: \""+l7Key+"\"}\n  - base64: \"!!!\"\n  - file: "+good+"\n  - {}", ""))
	for _, want := range []string{
		"persistence_profiles[0] (web).keys[0]: " + short + ": key decodes (base64) to 16 bytes; AES-256 needs 32",
		"persistence_profiles[0] (web).keys[1]: stat " + filepath.Join(dir, "missing") + ": no such file or directory",
		`persistence_profiles[0] (web).keys[2].file: "relative.key" must be an absolute path`,
		"persistence_profiles[0] (web).keys[3]: set file or base64, not both",
		"persistence_profiles[0] (web).keys[4]: base64 key is not valid base64",
		"persistence_profiles[0] (web).keys[6]: set file or base64",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want error %q in:\n%v", want, err)
		}
	}
	_, err = l7Parse(t, l7Config("keys:\n  - file: "+good+"\n  - base64: \""+l7Key+"\"", ""))
	if err == nil || !strings.Contains(err.Error(), "keys[1]: is the same key as keys[0]") {
		t.Errorf("duplicate key: %v", err)
	}
}

func TestL7ValidationErrors(t *testing.T) {
	k := `keys: [{base64: "` + l7Key + `"}]`
	cases := []struct {
		profile, vs, want string
	}{
		{k + "\ntimeout: 20000", "", "persistence_profiles[0] (web).timeout: 20000 must be between 1 and 14400 minutes (0 means none)"},
		{k + "\ntimeout: -1", "", "persistence_profiles[0] (web).timeout: -1 must be between 1 and 14400 minutes (0 means none)"},
		{"", "", "persistence_profiles[0] (web).keys: at least one 32-byte key is required"},
		{k + "\ncookie_name: \"bad name\"", "", `persistence_profiles[0] (web).cookie_name: "bad name" must be 1-64 characters of an HTTP token`},
		{k + "\nsame_site: sometimes", "", `persistence_profiles[0] (web).same_site: "sometimes" must be lax, strict or none`},
		{k + "\nsame_site: none\nsecure: false", "", "persistence_profiles[0] (web).same_site: none needs secure"},
		{k + "\nsame_site: none", "", `virtual_servers[0] (site).persistence: profile "web" sets same_site none, which needs a Secure cookie`},
		{k + "\npath: shop", "", `persistence_profiles[0] (web).path: "shop" must start with '/'`},
		{k + "\npath: \"/a;b\"", "", `persistence_profiles[0] (web).path: "/a;b" must start with '/'`},
		{k + "\ndomain: \"bad domain\"", "", `persistence_profiles[0] (web).domain: "bad domain" is not a host name`},
		{k + "\nheader_name: X-User", "", "persistence_profiles[0] (web).header_name: applies only to generic profiles"},
		{k + "\nmax_entries: 10", "", "persistence_profiles[0] (web).max_entries: does not apply to http_cookie profiles"},
		{k + "\nserver_down: later", "", `persistence_profiles[0] (web).server_down: "later" must be immediate or never`},
		{k, "read_header_timeout: 0", "virtual_servers[0] (site).read_header_timeout: 0 must be between 0.001 and 86400 seconds"},
		{k, "request_timeout: -1", "virtual_servers[0] (site).request_timeout: -1 must be between 0.001 and 86400 seconds (0 means none)"},
		{k, "max_header_bytes: 100", "virtual_servers[0] (site).max_header_bytes: 100 must be between 4096 and 1048576"},
		{k, "retries: 11", "virtual_servers[0] (site).retries: 11 must be between 0 and 10"},
		{k, "max_fails: -1", "virtual_servers[0] (site).max_fails: -1 must be between 0 and 1000"},
		{k, "forwarded_for: drop", `virtual_servers[0] (site).forwarded_for: "drop" must be append or replace`},
		{k, "access_log: logs/a.log", `virtual_servers[0] (site).access_log: "logs/a.log" must be stdout, stderr, off or an absolute file path`},
		{k, "tls_cert_file: /x.pem", "virtual_servers[0] (site): tls_cert_file and tls_key_file go together"},
		{k, "tls_cert_file: /nonexistent/c.pem\ntls_key_file: /nonexistent/k.pem", "virtual_servers[0] (site).tls_cert_file: cannot load the certificate and key"},
		{k, "tls_min_version: \"1.3\"", "virtual_servers[0] (site).tls_min_version: applies only with tls_cert_file and tls_key_file"},
	}
	for _, tc := range cases {
		_, err := l7Parse(t, l7Config(tc.profile, tc.vs))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("profile %q vs %q:\nwant %q\ngot  %v", tc.profile, tc.vs, tc.want, err)
		}
	}
}

func TestL7TypeSpecificOptions(t *testing.T) {
	base := `
pools: [{name: p, members: [{name: a, address: 10.0.0.1, port: 80}]}]
virtual_servers: [{name: one, type: http, address: 127.0.0.1, port: 80, pool: p, persistence: x}]
persistence_profiles:
  - name: x
`
	cases := []struct{ profile, want string }{
		{"    type: app_cookie", "persistence_profiles[0] (x).cookie_name: is required: it names the server cookie"},
		{"    type: app_cookie\n    cookie_name: S\n    http_only: true", "persistence_profiles[0] (x).http_only: applies only to http_cookie profiles"},
		{"    type: app_cookie\n    cookie_name: S\n    timeout: 0", "persistence_profiles[0] (x).timeout: 0 must be between 1 and 31536000 seconds"},
		{"    type: generic", "persistence_profiles[0] (x): a generic profile takes its key from exactly one of header_name, cookie_name or query_param"},
		{"    type: generic\n    header_name: A\n    query_param: b", "exactly one of header_name, cookie_name or query_param"},
		{"    type: generic\n    query_param: \"a&b\"", `persistence_profiles[0] (x).query_param: "a&b" must be at most 128 characters`},
		{"    type: generic\n    header_name: \"X User\"", `persistence_profiles[0] (x).header_name: "X User" is not a valid header name`},
		{"    type: generic\n    header_name: X\n    max_entries: 0", "persistence_profiles[0] (x).max_entries: 0 must be between 1 and"},
		{"    type: generic\n    header_name: X\n    keys: [{base64: \"" + l7Key + "\"}]", "persistence_profiles[0] (x).keys: applies only to http_cookie profiles"},
		{"    type: source_ip\n    cookie_name: A", "persistence_profiles[0] (x): cookie, header and query options do not apply to a source_ip profile"},
	}
	for _, tc := range cases {
		_, err := l7Parse(t, base+tc.profile+"\n")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\nwant %q\ngot  %v", tc.profile, tc.want, err)
		}
	}
	if _, err := l7Parse(t, base+"    type: generic\n    query_param: session\n    share_persistence: true\n    timeout: 60\n"); err != nil {
		t.Errorf("valid generic profile: %v", err)
	}
}

func TestL7ListenerOptionsRejectedOnL4(t *testing.T) {
	_, err := l7Parse(t, `
pools: [{name: p, members: [{name: a, address: 10.0.0.1, port: 80}]}]
virtual_servers: [{name: v, type: l4, protocol: tcp, address: 10.0.0.100, port: 80, pool: p, idle_timeout: 5}]
`)
	if err == nil || !strings.Contains(err.Error(), "virtual_servers[0] (v): listener options (tls, timeouts) apply only to http virtual servers") {
		t.Errorf("got %v", err)
	}
	// And no defaults leak into an l4 virtual server.
	cfg, err := l7Parse(t, `
pools: [{name: p, members: [{name: a, address: 10.0.0.1, port: 80}]}]
virtual_servers: [{name: v, type: l4, protocol: tcp, address: 10.0.0.100, port: 80, pool: p}]
`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.VirtualServers[0].hasHTTPOptions() {
		t.Errorf("http defaults applied to an l4 virtual server: %+v", cfg.VirtualServers[0].HTTPOptions)
	}
}

func TestL7Warnings(t *testing.T) {
	k := `keys: [{base64: "` + l7Key + `"}]`
	cfg, err := l7Parse(t, l7Config(k+"\nis_persistent_cookie: true\nha_mirroring: true", ""))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(cfg.Warnings(), "\n")
	if !strings.Contains(w, `persistence profile "web": is_persistent_cookie with timeout 0 sends Max-Age=0`) ||
		!strings.Contains(w, `persistence profile "web": ha_mirroring has no effect on http_cookie`) {
		t.Errorf("warnings: %s", w)
	}
	cfg, _ = l7Parse(t, l7Config(k+"\nis_persistent_cookie: true\ntimeout: 720", ""))
	if len(cfg.Warnings()) != 0 {
		t.Errorf("a persistent cookie with a timeout is fine: %q", cfg.Warnings())
	}
}

func TestL7UnknownFieldRejected(t *testing.T) {
	_, err := l7Parse(t, l7Config(`keys: [{base64: "`+l7Key+`"}]`+"\ncookie_nmae: LB", ""))
	if err == nil || !strings.Contains(err.Error(), "cookie_nmae") {
		t.Errorf("typo accepted: %v", err)
	}
}

func l7WriteCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	return testutil.WritePEM(t, dir, "c.pem", "k.pem", testutil.SelfSigned(t))
}
