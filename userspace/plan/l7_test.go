package plan

import (
	"crypto/tls"
	"encoding/base64"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/spec"
	"github.com/limpet-lb/limpet/userspace/config"
)

// The proxy runs on what L7 compiles: parsed addresses, durations, read
// keys and the config's defaults, with nothing left for the proxy to default.
func TestL7CompilesHTTPVirtualServers(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	cfg := parseConfig(t, `
persistence_profiles:
  - {name: sticky, type: http_cookie, share_persistence: true, same_site: lax, http_only: true, timeout: 30, keys: [{base64: "`+key+`"}]}
  - {name: app, type: app_cookie, cookie_name: JSESSIONID}
pools:
  - name: web
    members:
      - {name: a, address: "::ffff:127.0.0.1", port: 8080}
      - {name: b, address: 127.0.0.2, state: graceful_disabled}
virtual_servers:
  - {name: one, type: http, address: 127.0.0.1, port: 80, pool: web, persistence: sticky, forwarded_for: replace, connect_timeout: 1.5}
  - {name: two, type: http, address: 127.0.0.1, port: 81, pool: web, persistence: sticky}
  - {name: three, type: http, address: 127.0.0.1, port: 82, pool: web, persistence: app}
  - {name: l4, address: 192.0.2.1, port: 80, protocol: tcp, pool: web}
`)
	sp, err := L7(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.VirtualServers) != 3 || sp.GCInterval <= 0 {
		t.Fatalf("spec %+v", sp)
	}
	one := sp.VirtualServers[0]
	if one.Listen != netip.MustParseAddrPort("127.0.0.1:80") || one.HTTP.XFFAppend || one.HTTP.ConnectTimeout != 1500*time.Millisecond {
		t.Errorf("virtual server one: %+v", one)
	}
	h := sp.VirtualServers[1].HTTP
	if h.ReadHeaderTimeout != 10*time.Second || h.TunnelTimeout != time.Hour || !h.XFFAppend || h.MaxHeaderBytes != config.DefaultMaxHeaderBytes ||
		h.Retries != config.DefaultRetries || h.AccessLog != config.AccessLogStdout || h.TLSMinVersion != tls.VersionTLS12 || !h.HTTP2 {
		t.Errorf("defaults of virtual server two: %+v", h)
	}
	if m := one.Pool.Members; m[0].Addr != netip.MustParseAddr("127.0.0.1") || m[0].Port != 8080 || !m[1].Draining || m[1].Port != 0 {
		t.Errorf("members %+v", m)
	}
	p := one.Persistence
	if p == nil || p.Type != spec.ProfileHTTPCookie || p.Timeout != 30*time.Minute || len(p.Keys) != 1 || len(p.Keys[0]) != 32 ||
		p.SameSite != "Lax" || !p.HTTPOnly || p.Secure || p.Path != "/" || p.ServerDown != spec.ServerDownImmediate ||
		!slices.Equal(p.Accept, []string{"one", "two"}) {
		t.Errorf("cookie profile %+v", p)
	}
	if p := sp.VirtualServers[2].Persistence; p.Type != spec.ProfileAppCookie || p.Timeout != 20*time.Minute ||
		p.MaxEntries != config.DefaultPersistEntries || !p.PurgeWhenFull || p.CookieName != "JSESSIONID" {
		t.Errorf("app cookie profile %+v", p)
	}
}
