package config

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// HA mirroring modes. The wire protocol is the same in both: every node
// streams its own entries to its peers (see package userspace/mirror).
const (
	MirrorActiveStandby = "active_standby"
	MirrorActiveActive  = "active_active"
)

// HA mirroring defaults and limits. Times are in seconds.
const (
	DefaultMirrorMode              = MirrorActiveStandby
	DefaultMirrorQueueSize         = 65536
	MaxMirrorQueueSize             = 1 << 24
	DefaultMirrorBackoffInitial    = 0.5
	DefaultMirrorBackoffMax        = 30.0
	DefaultMirrorHeartbeatInterval = 1.0
	DefaultMirrorHeartbeatTimeout  = 5.0
	MinMirrorPSKBytes              = 32
	MaxMirrorPSKBytes              = 4096
	MaxMirrorPeers                 = 64
)

// HAMirroring is the top-level ha_mirroring section: how this node streams
// the entries of profiles with ha_mirroring: true to its peers. Without the
// section nothing is mirrored.
type HAMirroring struct {
	// Listen is the IP address and port peers connect to, e.g.
	// 10.0.0.1:7946; empty means this node only dials its peers.
	Listen string `yaml:"listen" json:"listen,omitempty"`
	// Advertise is the address this node's peers list it under, when that
	// is not Listen (a wildcard listen address, NAT). Peers use it to tell
	// which of their configured peers a connection comes from.
	Advertise string `yaml:"advertise" json:"advertise,omitempty"`
	// Peers are the host:port addresses this node dials. Two nodes may list
	// each other: they keep one connection between them.
	Peers []string `yaml:"peers" json:"peers,omitempty"`
	// Mode is active_standby or active_active; peers must agree.
	Mode string `yaml:"mode" json:"mode"`
	// Auth authenticates both ends of every connection: a pre-shared key
	// or mutual TLS. One of the two is required.
	Auth MirrorAuth `yaml:"auth" json:"auth"`
	// QueueSize bounds the entries queued for each peer; when a peer's
	// queue is full new entries for it are dropped and counted.
	QueueSize int `yaml:"queue_size" json:"queue_size"`
	// ReconnectBackoff spaces out the dials of a peer that is down.
	ReconnectBackoff MirrorBackoff `yaml:"reconnect_backoff" json:"reconnect_backoff"`
	// HeartbeatInterval is how often an idle connection sends a heartbeat;
	// a connection that receives nothing for HeartbeatTimeout is closed.
	HeartbeatInterval float64 `yaml:"heartbeat_interval" json:"heartbeat_interval"`
	HeartbeatTimeout  float64 `yaml:"heartbeat_timeout" json:"heartbeat_timeout"`
}

// MirrorAuth holds exactly one of a pre-shared key file or mutual TLS.
type MirrorAuth struct {
	// PSKFile holds the key shared by every node, at least 32 bytes (one
	// trailing newline is not part of it), e.g. from openssl rand -base64 48.
	PSKFile string `yaml:"psk_file" json:"psk_file,omitempty"`
	// TLS is mutual TLS 1.3 with certificates from a shared CA.
	TLS *MirrorTLS `yaml:"tls" json:"tls,omitempty"`
}

// MirrorTLS names the PEM files of mutual TLS. Every node presents
// CertFile as server and as client, and accepts any peer whose certificate
// CAFile signed, so certificates need both the serverAuth and clientAuth
// extended key usages.
type MirrorTLS struct {
	CAFile   string `yaml:"ca_file" json:"ca_file"`
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
}

// MirrorBackoff is an exponential backoff in seconds: the first retry
// waits Initial, each failure doubles the wait, up to Max.
type MirrorBackoff struct {
	Initial float64 `yaml:"initial" json:"initial"`
	Max     float64 `yaml:"max" json:"max"`
}

func (c *Config) applyMirrorDefaults() {
	m := c.HAMirroring
	if m == nil {
		return
	}
	m.Mode = cmp.Or(m.Mode, DefaultMirrorMode)
	m.QueueSize = cmp.Or(m.QueueSize, DefaultMirrorQueueSize)
	m.ReconnectBackoff.Initial = cmp.Or(m.ReconnectBackoff.Initial, DefaultMirrorBackoffInitial)
	m.ReconnectBackoff.Max = cmp.Or(m.ReconnectBackoff.Max, max(DefaultMirrorBackoffMax, m.ReconnectBackoff.Initial))
	m.HeartbeatInterval = cmp.Or(m.HeartbeatInterval, DefaultMirrorHeartbeatInterval)
	m.HeartbeatTimeout = cmp.Or(m.HeartbeatTimeout, max(DefaultMirrorHeartbeatTimeout, 3*m.HeartbeatInterval))
}

func (c *Config) validateMirror(v *validator) {
	m := c.HAMirroring
	if m == nil {
		return
	}
	const f = "ha_mirroring"
	var listen netip.AddrPort
	if m.Listen != "" {
		ap, err := netip.ParseAddrPort(m.Listen)
		if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
			v.add(f+".listen", "%q must be an IP address and a port, e.g. 10.0.0.1:7946 or [::]:7946", m.Listen)
		}
		listen = ap
	}
	if m.Advertise != "" {
		if _, err := hostPort(m.Advertise); err != nil {
			v.add(f+".advertise", "%q %v", m.Advertise, err)
		}
	}
	if m.Listen == "" && len(m.Peers) == 0 {
		v.add(f, "set listen, peers or both: a node that neither listens nor dials mirrors nothing")
	}
	if len(m.Peers) > MaxMirrorPeers {
		v.add(f+".peers", "%d peers exceed the limit of %d", len(m.Peers), MaxMirrorPeers)
	}
	seen := map[string]int{}
	for i, p := range m.Peers {
		pf := fmt.Sprintf("%s.peers[%d]", f, i)
		if _, err := hostPort(p); err != nil {
			v.add(pf, "%q %v", p, err)
			continue
		}
		if j, dup := seen[p]; dup {
			v.add(pf, "%q is listed twice (also peers[%d])", p, j)
		}
		seen[p] = i
		if ap, err := netip.ParseAddrPort(p); err == nil && listen.IsValid() && ap.Addr().Unmap() == listen.Addr().Unmap() && ap.Port() == listen.Port() {
			v.add(pf, "%q is this node's own listen address", p)
		}
	}
	if !oneOf(m.Mode, MirrorActiveStandby, MirrorActiveActive) {
		v.add(f+".mode", "%q must be active_standby or active_active", m.Mode)
	}
	m.validateAuth(v, f+".auth")
	if m.QueueSize < 1 || m.QueueSize > MaxMirrorQueueSize {
		v.add(f+".queue_size", "%d must be between 1 and %d entries", m.QueueSize, MaxMirrorQueueSize)
	}
	b := m.ReconnectBackoff
	if b.Initial < 0.01 || b.Initial > 60 {
		v.add(f+".reconnect_backoff.initial", "%g must be between 0.01 and 60 seconds", b.Initial)
	}
	if b.Max < b.Initial || b.Max > 3600 {
		v.add(f+".reconnect_backoff.max", "%g must be between initial (%g) and 3600 seconds", b.Max, b.Initial)
	}
	if m.HeartbeatInterval < 0.05 || m.HeartbeatInterval > 60 {
		v.add(f+".heartbeat_interval", "%g must be between 0.05 and 60 seconds", m.HeartbeatInterval)
	}
	if m.HeartbeatTimeout < 2*m.HeartbeatInterval || m.HeartbeatTimeout > 600 {
		v.add(f+".heartbeat_timeout", "%g must be at least twice heartbeat_interval (%g) and at most 600 seconds", m.HeartbeatTimeout, m.HeartbeatInterval)
	}
}

func (m *HAMirroring) validateAuth(v *validator, f string) {
	a := m.Auth
	switch {
	case a.PSKFile == "" && a.TLS == nil:
		v.add(f, "set psk_file or tls: peers must authenticate each other")
	case a.PSKFile != "" && a.TLS != nil:
		v.add(f, "set psk_file or tls, not both")
	case a.PSKFile != "":
		if !filepath.IsAbs(a.PSKFile) {
			v.add(f+".psk_file", "%q must be an absolute path", a.PSKFile)
		} else if _, err := LoadMirrorPSK(a.PSKFile); err != nil {
			v.add(f+".psk_file", "%v", err)
		}
	default:
		t := a.TLS
		ok := true
		for _, p := range []struct{ field, path string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
			switch {
			case p.path == "":
				v.add(f+".tls."+p.field, "is required")
				ok = false
			case !filepath.IsAbs(p.path):
				v.add(f+".tls."+p.field, "%q must be an absolute path", p.path)
				ok = false
			}
		}
		if !ok {
			return
		}
		if _, _, err := t.Load(); err != nil {
			v.add(f+".tls", "%v", err)
		}
	}
}

// LoadMirrorPSK reads a pre-shared key file: its content, less one trailing
// newline, is the key, and must be 32 to 4096 bytes long. Errors never hold
// the key.
func LoadMirrorPSK(path string) ([]byte, error) {
	b, err := readSecret(path)
	if err != nil {
		return nil, err
	}
	switch {
	case len(b) < MinMirrorPSKBytes:
		return nil, fmt.Errorf("%s holds a key of %d bytes; at least %d are required (openssl rand -base64 48 > %s)", path, len(b), MinMirrorPSKBytes, path)
	case len(b) > MaxMirrorPSKBytes:
		return nil, fmt.Errorf("%s holds %d bytes; a key is at most %d", path, len(b), MaxMirrorPSKBytes)
	}
	return b, nil
}

// Load reads the CA and the key pair, and checks that the CA signed the
// certificate, so a node never starts with a certificate its peers refuse.
func (t *MirrorTLS) Load() (*x509.CertPool, tls.Certificate, error) {
	pool, err := LoadCAFile(t.CAFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("ca_file: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("cert_file and key_file: %v", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("cert_file: %v", err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			return nil, tls.Certificate{}, fmt.Errorf("cert_file is not valid under ca_file for a mirroring peer, which is both TLS server and client (it needs the serverAuth and clientAuth usages): %v", err)
		}
	}
	return pool, cert, nil
}

// hostPort checks a host:port address with a port of 1-65535.
func hostPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", fmt.Errorf("must be host:port, e.g. 10.0.0.2:7946 or [2001:db8::2]:7946")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("has port %q, which is not 1-65535", port)
	}
	return host, nil
}
