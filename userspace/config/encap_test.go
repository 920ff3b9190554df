package config

import (
	"strings"
	"testing"
)

// encapConfig is a config with an ipip/gue virtual server over a pool of
// one IPv4 and one IPv6 member, behind the given settings lines.
func encapConfig(forwarding, settings string) string {
	return `
settings:
` + settings + `
pools:
  - name: far
    members:
      - {name: a, address: 10.20.0.5}
      - {name: b, address: "fd00:20::5"}
virtual_servers:
  - {name: web, address: "2001:db8:f::10", port: 80, protocol: tcp, pool: far, forwarding: ` + forwarding + `}
`
}

func TestEncapForwardingParses(t *testing.T) {
	for _, fw := range []string{ForwardIPIP, ForwardGUE} {
		cfg, err := Parse([]byte(encapConfig(fw, "  encap_source_v4: 10.0.0.1\n  encap_source_v6: \"fd00::1\"")))
		if err != nil {
			t.Fatalf("%s: %v", fw, err)
		}
		if cfg.VirtualServers[0].Forwarding != fw || cfg.Settings.GUEPort != DefaultGUEPort {
			t.Fatalf("%s: forwarding %q, gue_port %d", fw, cfg.VirtualServers[0].Forwarding, cfg.Settings.GUEPort)
		}
	}
	cfg, err := Parse([]byte(encapConfig(ForwardGUE, "  encap_source_v4: 10.0.0.1\n  encap_source_v6: \"fd00::1\"\n  gue_port: 7000")))
	if err != nil || cfg.Settings.GUEPort != 7000 {
		t.Fatalf("gue_port 7000: %v, %+v", err, cfg)
	}
}

// TestEncapErrorsNameTheField: a missing outer source names the setting a
// member needs, and the member; bad settings name themselves.
func TestEncapErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		fw, settings string
		want         []string
		not          string
	}{
		{ForwardIPIP, "  encap_source_v6: \"fd00::1\"", []string{"virtual_servers[0] (web).forwarding", "needs settings.encap_source_v4", "member 0 (a)", "10.20.0.5"}, "encap_source_v6"},
		{ForwardGUE, "  encap_source_v4: 10.0.0.1", []string{"needs settings.encap_source_v6", "member 1 (b)"}, "encap_source_v4"},
		{ForwardIPIP, "  encap_source_v4: \"fd00::1\"\n  encap_source_v6: \"fd00::1\"", []string{"settings.encap_source_v4", "must be a unicast IPv4 address"}, ""},
		{ForwardIPIP, "  encap_source_v4: 10.0.0.1\n  encap_source_v6: 10.0.0.1", []string{"settings.encap_source_v6", "must be a unicast IPv6 address"}, ""},
		{ForwardIPIP, "  encap_source_v4: 10.0.0.1\n  encap_source_v6: \"ff02::1\"", []string{"settings.encap_source_v6"}, ""},
		{ForwardGUE, "  encap_source_v4: 10.0.0.1\n  encap_source_v6: \"fd00::1\"\n  gue_port: 70000", []string{"settings.gue_port", "70000"}, ""},
		{"vxlan", "  encap_source_v4: 10.0.0.1", []string{"must be nat, dsr, ipip or gue"}, ""},
	} {
		_, err := Parse([]byte(encapConfig(c.fw, c.settings)))
		if err == nil {
			t.Fatalf("%s with %q: no error", c.fw, c.settings)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s with %q: error %q does not say %q", c.fw, c.settings, err, w)
			}
		}
		if c.not != "" && strings.Contains(err.Error(), "needs settings."+c.not) {
			t.Errorf("%s with %q: error %q asks for the configured %s", c.fw, c.settings, err, c.not)
		}
	}
}

// TestEncapPortsAndFamilies: a tunnel keeps the client's packet, so members
// cannot change ports; it crosses families, so a mixed pool is fine, but
// not for dsr.
func TestEncapPortsAndFamilies(t *testing.T) {
	y := strings.Replace(encapConfig(ForwardIPIP, "  encap_source_v4: 10.0.0.1\n  encap_source_v6: \"fd00::1\""), "address: 10.20.0.5}", "address: 10.20.0.5, port: 8080}", 1)
	if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), "ipip cannot change ports") {
		t.Fatalf("member on another port: %v", err)
	}
	y = encapConfig(ForwardDSR, "  encap_source_v4: 10.0.0.1")
	if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), "must match the VIP's family") {
		t.Fatalf("dsr over a mixed pool: %v", err)
	}
}
