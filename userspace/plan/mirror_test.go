package plan

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/mirror"
)

var mirrorPSK = []byte("0123456789abcdef0123456789abcdef-test-key")

func TestMirrorConfig(t *testing.T) {
	key := filepath.Join(t.TempDir(), "mirror.key")
	if err := os.WriteFile(key, append(mirrorPSK, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, `
persistence_profiles:
  - {name: sticky, ha_mirroring: true}
  - {name: local}
pools:
  - name: web
    members: [{name: a, address: 10.0.0.1, port: 8080}]
virtual_servers:
  - {name: web, address: 192.0.2.1, port: 80, protocol: tcp, pool: web, persistence: sticky}
  - {name: other, address: 192.0.2.1, port: 81, protocol: tcp, pool: web, persistence: local}
ha_mirroring:
  listen: 127.0.0.1:7946
  peers: [127.0.0.2:7946]
  mode: active_active
  auth: {psk_file: `+key+`}
  reconnect_backoff: {initial: 0.25}
`)
	c, err := MirrorConfig(cfg.HAMirroring)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7946" || c.Mode != mirror.ActiveActive || string(c.PSK) != string(mirrorPSK) || c.TLS != nil ||
		c.ReconnectMin != 250*time.Millisecond || c.ReconnectMax != 30*time.Second || c.HeartbeatTimeout != 5*time.Second || c.QueueSize != 65536 {
		t.Errorf("MirrorConfig: %+v", c)
	}
	if _, err := mirror.New(c, noLocal{}, nil); err != nil {
		t.Errorf("New: %v", err)
	}
	scope := MirrorScope(cfg)
	for table, want := range map[string]bool{
		"profile:sticky":        true,
		"profile:sticky/vs:web": true,
		"profile:local/vs:web":  false,
		"profile:unknown":       false,
		"sticky":                false,
	} {
		if scope(table) != want {
			t.Errorf("scope(%q) = %v", table, !want)
		}
	}
}

// noLocal is a mirror.Local with no tables.
type noLocal struct{}

func (noLocal) Snapshot(context.Context) ([]mirror.Entry, error) { return nil, nil }
func (noLocal) Apply(mirror.Entry) error                         { return nil }
