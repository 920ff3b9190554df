package config

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limpet-lb/limpet/test/testutil"
)

// mirrorConfig is a valid config with the given ha_mirroring section
// (YAML, indented by two spaces) and a mirrored profile.
func mirrorConfig(section string) string {
	return `
persistence_profiles:
  - {name: sticky, ha_mirroring: true}
pools:
  - name: web
    members:
      - {name: a, address: 10.0.0.1, port: 8080}
virtual_servers:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, pool: web, persistence: sticky}
ha_mirroring:
` + section
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const mirrorKey = "bXkgc2hhcmVkIG1pcnJvcmluZyBrZXksIGF0IGxlYXN0IDMyIGJ5dGVz"

func TestMirrorDefaults(t *testing.T) {
	key := writeFile(t, t.TempDir(), "mirror.key", mirrorKey+"\n")
	cfg, err := Parse([]byte(mirrorConfig("  listen: 10.0.0.1:7946\n  peers: [10.0.0.2:7946]\n  auth: {psk_file: " + key + "}\n")))
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.HAMirroring
	if m == nil {
		t.Fatal("ha_mirroring not parsed")
	}
	if m.Mode != MirrorActiveStandby || m.QueueSize != 65536 || m.ReconnectBackoff.Initial != 0.5 || m.ReconnectBackoff.Max != 30 ||
		m.HeartbeatInterval != 1 || m.HeartbeatTimeout != 5 || m.Auth.PSKFile != key || m.Listen != "10.0.0.1:7946" || len(m.Peers) != 1 {
		t.Errorf("defaults: %+v", m)
	}
	if !cfg.Profiles[0].HAMirroring {
		t.Errorf("the profile's ha_mirroring flag was lost")
	}
	// A long heartbeat interval stretches the default timeout.
	cfg, err = Parse([]byte(mirrorConfig("  peers: [lb2.example:7946]\n  heartbeat_interval: 3\n  reconnect_backoff: {initial: 45}\n  auth: {psk_file: " + key + "}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HAMirroring.HeartbeatTimeout != 9 || cfg.HAMirroring.ReconnectBackoff.Max != 45 {
		t.Errorf("derived defaults: %+v", cfg.HAMirroring)
	}
	// Without the section nothing is mirrored.
	cfg, err = Parse([]byte(strings.TrimSuffix(mirrorConfig(""), "ha_mirroring:\n")))
	if err != nil || cfg.HAMirroring != nil {
		t.Errorf("no section: %+v, %v", cfg, err)
	}
}

func TestLoadMirrorPSK(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    string // key, or an error substring after "!"
	}{
		{mirrorKey + "\n", mirrorKey},
		{mirrorKey + "\r\n", mirrorKey},
		{mirrorKey, mirrorKey},
		{mirrorKey + "\n\n", mirrorKey + "\n"},
		{strings.Repeat("k", 31) + "\n", "!a key of 31 bytes; at least 32 are required"},
		{strings.Repeat("k", 5000), "!a key is at most 4096"},
	} {
		p := writeFile(t, dir, "k", tc.content)
		b, err := LoadMirrorPSK(p)
		switch {
		case strings.HasPrefix(tc.want, "!"):
			if err == nil || !strings.Contains(err.Error(), tc.want[1:]) {
				t.Errorf("%q: %v, want %q", tc.content, err, tc.want[1:])
			}
			if err != nil && strings.Contains(err.Error(), "kkkkkkkk") {
				t.Errorf("the error holds the key: %v", err)
			}
		case err != nil || string(b) != tc.want:
			t.Errorf("%q: %q, %v", tc.content, b, err)
		}
	}
	if _, err := LoadMirrorPSK(filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("missing file: %v", err)
	}
}

// mirrorPKI writes a CA, a peer certificate and key, a certificate of
// another CA, and a certificate without the clientAuth usage.
type mirrorPKI struct{ ca, cert, key, foreignCert, foreignKey, serverOnly, serverOnlyKey string }

func newMirrorPKI(t *testing.T) mirrorPKI {
	t.Helper()
	dir := t.TempDir()
	ca, other := testutil.NewCA(t, "mirror CA"), testutil.NewCA(t, "other CA")
	issue := func(ca *testutil.CA, name string, usages ...x509.ExtKeyUsage) (string, string) {
		return testutil.WritePEM(t, dir, name+".pem", name+".key", ca.Issue(t, name, usages))
	}
	var p mirrorPKI
	p.ca = writeFile(t, dir, "ca.pem", string(ca.PEM()))
	p.cert, p.key = issue(ca, "node", testutil.PeerUsages...)
	p.foreignCert, p.foreignKey = issue(other, "foreign", testutil.PeerUsages...)
	p.serverOnly, p.serverOnlyKey = issue(ca, "server-only", x509.ExtKeyUsageServerAuth)
	return p
}

func TestMirrorValidation(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "mirror.key", mirrorKey)
	short := writeFile(t, dir, "short.key", "too short")
	pki := newMirrorPKI(t)
	psk := "  auth: {psk_file: " + key + "}\n"
	tlsAuth := func(ca, cert, key string) string {
		return "  auth: {tls: {ca_file: " + ca + ", cert_file: " + cert + ", key_file: " + key + "}}\n"
	}
	const f = "ha_mirroring"
	for _, tc := range []struct {
		section string
		want    string // empty: valid
	}{
		{"  listen: 10.0.0.1:7946\n" + psk, ""},
		{"  listen: \"[::]:7946\"\n  advertise: \"[2001:db8::1]:7946\"\n  peers: [\"[2001:db8::2]:7946\", lb3.example:7946]\n  mode: active_active\n" + psk, ""},
		{"  peers: [10.0.0.2:7946]\n" + tlsAuth(pki.ca, pki.cert, pki.key), ""},
		{psk, f + ": set listen, peers or both"},
		{"  listen: 10.0.0.1\n" + psk, f + `.listen: "10.0.0.1" must be an IP address and a port`},
		{"  listen: lb1.example:7946\n" + psk, f + `.listen: "lb1.example:7946" must be an IP address and a port`},
		{"  listen: 10.0.0.1:0\n" + psk, f + `.listen: "10.0.0.1:0" must be an IP address and a port`},
		{"  listen: 10.0.0.1:1\n  advertise: nowhere\n" + psk, f + `.advertise: "nowhere" must be host:port`},
		{"  peers: [10.0.0.2]\n" + psk, f + `.peers[0]: "10.0.0.2" must be host:port`},
		{"  peers: [\"10.0.0.2:99999\"]\n" + psk, f + `.peers[0]: "10.0.0.2:99999" has port "99999", which is not 1-65535`},
		{"  peers: [10.0.0.2:7946, 10.0.0.2:7946]\n" + psk, f + `.peers[1]: "10.0.0.2:7946" is listed twice (also peers[0])`},
		{"  listen: 10.0.0.1:7946\n  peers: [10.0.0.1:7946]\n" + psk, f + `.peers[0]: "10.0.0.1:7946" is this node's own listen address`},
		{"  listen: 10.0.0.1:7946\n  mode: hot_standby\n" + psk, f + `.mode: "hot_standby" must be active_standby or active_active`},
		{"  listen: 10.0.0.1:7946\n", f + ".auth: set psk_file or tls: peers must authenticate each other"},
		{"  listen: 10.0.0.1:7946\n  auth: {psk_file: " + key + ", tls: {ca_file: " + pki.ca + "}}\n", f + ".auth: set psk_file or tls, not both"},
		{"  listen: 10.0.0.1:7946\n  auth: {psk_file: mirror.key}\n", f + `.auth.psk_file: "mirror.key" must be an absolute path`},
		{"  listen: 10.0.0.1:7946\n  auth: {psk_file: " + short + "}\n", f + ".auth.psk_file: " + short + " holds a key of 9 bytes; at least 32 are required"},
		{"  listen: 10.0.0.1:7946\n  auth: {psk_file: /nonexistent/key}\n", f + ".auth.psk_file: cannot read"},
		{"  listen: 10.0.0.1:7946\n  auth: {tls: {ca_file: " + pki.ca + "}}\n", f + ".auth.tls.cert_file: is required"},
		{"  listen: 10.0.0.1:7946\n" + tlsAuth("ca.pem", pki.cert, pki.key), f + `.auth.tls.ca_file: "ca.pem" must be an absolute path`},
		{"  listen: 10.0.0.1:7946\n" + tlsAuth(pki.ca, pki.foreignCert, pki.foreignKey), f + ".auth.tls: cert_file is not valid under ca_file"},
		{"  listen: 10.0.0.1:7946\n" + tlsAuth(pki.ca, pki.serverOnly, pki.serverOnlyKey), "it needs the serverAuth and clientAuth usages"},
		{"  listen: 10.0.0.1:7946\n" + tlsAuth(pki.ca, pki.cert, pki.foreignKey), f + ".auth.tls: cert_file and key_file:"},
		{"  listen: 10.0.0.1:7946\n" + tlsAuth(pki.key, pki.cert, pki.key), f + ".auth.tls: ca_file: " + pki.key + " holds no PEM certificate"},
		{"  listen: 10.0.0.1:7946\n  queue_size: -1\n" + psk, f + ".queue_size: -1 must be between 1 and 16777216 entries"},
		{"  listen: 10.0.0.1:7946\n  reconnect_backoff: {initial: 0.001}\n" + psk, f + ".reconnect_backoff.initial: 0.001 must be between 0.01 and 60 seconds"},
		{"  listen: 10.0.0.1:7946\n  reconnect_backoff: {initial: 5, max: 2}\n" + psk, f + ".reconnect_backoff.max: 2 must be between initial (5) and 3600 seconds"},
		{"  listen: 10.0.0.1:7946\n  heartbeat_interval: 0.01\n" + psk, f + ".heartbeat_interval: 0.01 must be between 0.05 and 60 seconds"},
		{"  listen: 10.0.0.1:7946\n  heartbeat_interval: 2\n  heartbeat_timeout: 3\n" + psk, f + ".heartbeat_timeout: 3 must be at least twice heartbeat_interval (2)"},
		{"  listen: 10.0.0.1:7946\n  psk: x\n" + psk, `ha_mirroring: unknown field "psk"`},
	} {
		err := checkParse(t, tc.section, mirrorConfig(tc.section), tc.want)
		if err != nil && strings.Contains(err.Error(), mirrorKey) {
			t.Errorf("an error holds the key: %v", err)
		}
	}
}
