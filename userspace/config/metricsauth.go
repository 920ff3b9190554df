package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// MetricsAuth guards the metrics listener: /metrics and the status page at /.
// Secrets live in files (mode 0600 or 0640), never in the config itself.
type MetricsAuth struct {
	// Type is basic (HTTP basic auth: browsers ask for it) or bearer
	// (Authorization: Bearer TOKEN, as Prometheus's authorization.credentials_file sends).
	Type string `yaml:"type" json:"type"`
	// Username and PasswordFile are the basic-auth credentials.
	Username     string `yaml:"username" json:"username,omitempty"`
	PasswordFile string `yaml:"password_file" json:"password_file,omitempty"`
	// TokenFile holds the bearer token, at least 16 bytes.
	TokenFile string `yaml:"token_file" json:"token_file,omitempty"`
}

// Metrics auth types.
const (
	MetricsAuthBasic  = "basic"
	MetricsAuthBearer = "bearer"
	// MinMetricsTokenBytes keeps a bearer token out of guessing range.
	MinMetricsTokenBytes = 16
	maxMetricsSecret     = 4096
)

func (c *Config) validateMetricsAuth(v *validator) {
	a := c.Settings.MetricsAuth
	if a == nil {
		return
	}
	const f = "settings.metrics_auth"
	if c.Settings.MetricsListen == "" {
		v.add(f, "guards settings.metrics_listen, which is not set")
	}
	file := func(field, path string, minLen int) {
		switch {
		case path == "":
			v.add(f+"."+field, "is required for type %s", a.Type)
		case !filepath.IsAbs(path):
			v.add(f+"."+field, "%q must be an absolute path", path)
		default:
			if _, err := LoadMetricsSecret(path, minLen); err != nil {
				v.add(f+"."+field, "%v", err)
			}
		}
	}
	switch a.Type {
	case MetricsAuthBasic:
		if a.Username == "" || strings.ContainsAny(a.Username, ":\r\n") || len(a.Username) > 128 {
			v.add(f+".username", "%q must be 1-128 characters without ':' or line breaks", a.Username)
		}
		file("password_file", a.PasswordFile, 1)
		if a.TokenFile != "" {
			v.add(f+".token_file", "applies to type bearer")
		}
	case MetricsAuthBearer:
		file("token_file", a.TokenFile, MinMetricsTokenBytes)
		if a.Username != "" || a.PasswordFile != "" {
			v.add(f, "username and password_file apply to type basic")
		}
	default:
		v.add(f+".type", "%q must be basic or bearer", a.Type)
	}
}

// readSecret reads a one-line secret file (a password, a token, a key): its
// content less one trailing newline (LF or CRLF).
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %v", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r")), nil
}

// LoadMetricsSecret reads a password or token file: one trailing newline is
// not part of it, and it must hold at least minLen bytes.
func LoadMetricsSecret(path string, minLen int) ([]byte, error) {
	b, err := readSecret(path)
	if err != nil {
		return nil, err
	}
	switch {
	case len(b) < minLen:
		return nil, fmt.Errorf("%s holds %d bytes; at least %d are required (openssl rand -base64 24 > %s)", path, len(b), minLen, path)
	case len(b) > maxMetricsSecret:
		return nil, fmt.Errorf("%s holds %d bytes; at most %d", path, len(b), maxMetricsSecret)
	case bytes.ContainsAny(b, "\r\n"):
		return nil, fmt.Errorf("%s holds more than one line", path)
	}
	return b, nil
}

// metricsWarnings: a status page on a non-loopback address without
// credentials is readable by anyone who reaches it.
func (c *Config) metricsWarnings() []string {
	var w []string
	a := c.Settings.MetricsAuth
	if ap, err := netip.ParseAddrPort(c.Settings.MetricsListen); err == nil && a == nil && !ap.Addr().IsLoopback() {
		w = append(w, fmt.Sprintf("settings.metrics_listen %s is not a loopback address and settings.metrics_auth is not set: anyone who reaches it can read the status page and metrics", c.Settings.MetricsListen))
	}
	if a != nil {
		for _, p := range []string{a.PasswordFile, a.TokenFile} {
			if fi, err := os.Stat(p); p != "" && err == nil && fi.Mode().Perm()&0o004 != 0 {
				w = append(w, fmt.Sprintf("settings.metrics_auth: %s is readable by every user; chmod 600 it", p))
			}
		}
	}
	return w
}
