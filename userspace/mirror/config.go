package mirror

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/limpet-lb/limpet/userspace/enum"
)

// Mode is active_standby or active_active. Both stream entries both ways;
// see the package documentation for what differs.
type Mode uint8

// Modes.
const (
	ActiveStandby Mode = 1
	ActiveActive  Mode = 2
)

var modeNames = enum.Names[Mode]{
	ActiveStandby: "active_standby",
	ActiveActive:  "active_active",
}

func (m Mode) String() string { return modeNames.Name(m, "mode(%d)") }

// ParseMode parses "active_standby" or "active_active".
func ParseMode(s string) (Mode, error) {
	if m, ok := modeNames.Parse(s); ok {
		return m, nil
	}
	return 0, fmt.Errorf("mode %q must be active_standby or active_active", s)
}

// TLSAuth is mutual TLS with a shared CA: the node presents Certificate as
// server and client, and accepts peers whose certificate CA signed.
type TLSAuth struct {
	CA          *x509.CertPool
	Certificate tls.Certificate
}

// Config configures a Node. Exactly one of PSK and TLS is set.
type Config struct {
	// Listen is the address to accept peers on ("10.0.0.1:7946"); empty
	// means the node only dials.
	Listen string
	// Advertise is the address peers list this node under; empty means
	// the address the listener is bound to.
	Advertise string
	// Peers are the host:port addresses to dial.
	Peers []string
	// Mode must be the same on every peer.
	Mode Mode
	// PSK is the pre-shared key, at least 32 bytes.
	PSK []byte
	// TLS is mutual TLS.
	TLS *TLSAuth
	// QueueSize bounds each connection's queue (distinct keys); default 65536.
	QueueSize int
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// dials of a peer; defaults 500ms and 30s.
	ReconnectMin, ReconnectMax time.Duration
	// HeartbeatInterval is how often an idle connection sends a heartbeat
	// (default 1s); a connection that receives nothing for HeartbeatTimeout
	// (default 5s), or cannot send for as long, is closed.
	HeartbeatInterval, HeartbeatTimeout time.Duration
	// HandshakeTimeout bounds authentication; default 5s.
	HandshakeTimeout time.Duration
	// ResyncInterval is the least time between two bulk syncs of one
	// connection that dropped entries (its queue overflowed); default 30s.
	ResyncInterval time.Duration
	// MaxPendingHandshakes bounds the inbound connections being
	// authenticated at once; more are closed. Default 64.
	MaxPendingHandshakes int
	// Scope reports whether a table is mirrored; nil mirrors every table.
	// SetScope changes it at run time.
	Scope func(table string) bool
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.QueueSize == 0 {
		c.QueueSize = 65536
	}
	def(&c.ReconnectMin, 500*time.Millisecond)
	def(&c.ReconnectMax, max(30*time.Second, c.ReconnectMin))
	def(&c.HeartbeatInterval, time.Second)
	def(&c.HeartbeatTimeout, max(5*time.Second, 3*c.HeartbeatInterval))
	def(&c.HandshakeTimeout, 5*time.Second)
	def(&c.ResyncInterval, 30*time.Second)
	if c.MaxPendingHandshakes == 0 {
		c.MaxPendingHandshakes = 64
	}
}

func (c *Config) validate() error {
	switch {
	case c.Listen == "" && len(c.Peers) == 0:
		return errors.New("set Listen, Peers or both")
	case c.Mode != ActiveStandby && c.Mode != ActiveActive:
		return fmt.Errorf("unknown mode %d", uint8(c.Mode))
	case (c.PSK == nil) == (c.TLS == nil):
		return errors.New("set exactly one of PSK and TLS")
	case c.PSK != nil && len(c.PSK) < 32:
		return fmt.Errorf("the pre-shared key has %d bytes; at least 32 are required", len(c.PSK))
	case c.QueueSize < 1:
		return fmt.Errorf("queue size %d is not positive", c.QueueSize)
	case c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin:
		return errors.New("reconnect backoff needs 0 < min <= max")
	case c.HeartbeatInterval <= 0 || c.HeartbeatTimeout < 2*c.HeartbeatInterval:
		return errors.New("heartbeat timeout must be at least twice the interval")
	case len(c.Advertise) > maxAdvertise:
		return fmt.Errorf("advertised address is longer than %d bytes", maxAdvertise)
	}
	if c.TLS != nil && (c.TLS.CA == nil || len(c.TLS.Certificate.Certificate) == 0) {
		return errors.New("tls needs a CA pool and a certificate")
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("peer %q: %v", p, err)
		}
		if seen[p] {
			return fmt.Errorf("peer %q is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}
