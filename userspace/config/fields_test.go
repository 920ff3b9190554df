package config

import (
	"errors"
	"strings"
	"testing"
)

// A full config, one key per line, that parses; each case of
// TestUnknownFieldsNameWhereAndWhat replaces one key of it with a typo.
const everySection = `settings:
  interfaces: [eth0]
  xdp_mode: auto
  idle_timeouts:
    tcp_established: 900
persistence_profiles:
  - name: sticky
    timeout: 300
    purge_when_full: true
  - name: shop
    type: http_cookie
    keys:
      - base64: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
pools:
  - name: web
    health_monitor: hm
    members:
      - name: web1
        address: 10.0.0.1
virtual_servers:
  - name: vs
    address: 192.0.2.10
    port: 80
    protocol: tcp
    pool: web
    persistence: sticky
  - name: site
    type: http
    address: 127.0.0.1
    port: 8080
    pool: web
    persistence: shop
    read_header_timeout: 5
health_monitors:
  - name: hm
    type: http
    headers:
      - name: X-Check
        value: "1"
ha_mirroring:
  listen: 127.0.0.1:7946
  peers: [127.0.0.2:7946]
  auth:
    psk_file: /etc/limpet/psk
  reconnect_backoff:
    initial: 1
`

func TestUnknownFieldsNameWhereAndWhat(t *testing.T) {
	if _, err := Parse([]byte(everySection)); err != nil {
		var ufe *UnknownFieldError
		if errors.As(err, &ufe) {
			t.Fatalf("the base config has an unknown field: %v", err)
		}
		// Other errors (the psk file does not exist, say) come after the
		// unknown-field check, which is what this test is about.
	}
	for _, c := range []struct {
		key, typo string
		want      string
	}{
		{"settings:", "setings:", `line 1: unknown section "setings" (did you mean "settings"?)`},
		{"  xdp_mode: auto", "  xdp_mod: auto", `line 3: settings: unknown field "xdp_mod" (did you mean "xdp_mode"?)`},
		{"    tcp_established: 900", "    tcp_establised: 900", `line 5: settings.idle_timeouts: unknown field "tcp_establised" (did you mean "tcp_established"?)`},
		{"    timeout: 300", "    timout: 300", `line 8: persistence_profiles[0] (sticky): unknown field "timout" (did you mean "timeout"?)`},
		{"    purge_when_full: true", "    purge_when_ful: true", `line 9: persistence_profiles[0] (sticky): unknown field "purge_when_ful" (did you mean "purge_when_full"?)`},
		{"      - base64:", "      - bse64:", `line 13: persistence_profiles[1] (shop).keys[0]: unknown field "bse64" (did you mean "base64"?)`},
		{"    health_monitor: hm", "    healthmonitor: hm", `line 16: pools[0] (web): unknown field "healthmonitor" (did you mean "health_monitor"?)`},
		{"        address: 10.0.0.1", "        adress: 10.0.0.1", `line 19: pools[0] (web).members[0] (web1): unknown field "adress" (did you mean "address"?)`},
		{"    protocol: tcp", "    protcol: tcp", `line 24: virtual_servers[0] (vs): unknown field "protcol" (did you mean "protocol"?)`},
		{"    read_header_timeout: 5", "    read_header_timout: 5", `line 33: virtual_servers[1] (site): unknown field "read_header_timout" (did you mean "read_header_timeout"?)`},
		{"    type: http\n    headers:", "    typ: http\n    headers:", `line 36: health_monitors[0] (hm): unknown field "typ" (did you mean "type"?)`},
		{"        value: \"1\"", "        valeu: \"1\"", `line 39: health_monitors[0] (hm).headers[0] (X-Check): unknown field "valeu" (did you mean "value"?)`},
		{"  peers:", "  peer:", `line 42: ha_mirroring: unknown field "peer" (did you mean "peers"?)`},
		{"    psk_file:", "    pskfile:", `line 44: ha_mirroring.auth: unknown field "pskfile" (did you mean "psk_file"?)`},
		{"    initial: 1", "    inital: 1", `line 46: ha_mirroring.reconnect_backoff: unknown field "inital" (did you mean "initial"?)`},
		// Nothing close: no suggestion.
		{"    timeout: 300", "    colour: blue", `line 8: persistence_profiles[0] (sticky): unknown field "colour"`},
	} {
		if strings.Count(everySection, c.key) != 1 {
			t.Fatalf("%q is not one key of the base config", c.key)
		}
		y := strings.Replace(everySection, c.key, c.typo, 1)
		_, err := Parse([]byte(y))
		if err == nil || err.Error() != c.want {
			t.Errorf("%s -> %s:\n got: %v\nwant: %s", strings.TrimSpace(c.key), strings.TrimSpace(c.typo), err, c.want)
		}
		var ufe *UnknownFieldError
		if !errors.As(err, &ufe) {
			t.Errorf("%s: %T is not an *UnknownFieldError", c.typo, err)
		}
	}
}

// Every typo is reported at once, in file order, so one pass fixes them.
func TestUnknownFieldsAllReported(t *testing.T) {
	y := strings.NewReplacer("    timeout: 300", "    timout: 300", "        address:", "        adress:").Replace(everySection)
	_, err := Parse([]byte(y))
	want := `line 8: persistence_profiles[0] (sticky): unknown field "timout" (did you mean "timeout"?)` + "\n" +
		`line 19: pools[0] (web).members[0] (web1): unknown field "adress" (did you mean "address"?)`
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
}

// Anchors, aliases and merge keys are followed, so a typo in a shared
// block is found where it is defined.
func TestUnknownFieldsThroughAliases(t *testing.T) {
	y := `persistence_profiles:
  - &base
    name: a
    timout: 300
  - <<: *base
    name: b
pools:
  - {name: p, members: [{name: m, address: 10.0.0.1}]}
virtual_servers:
  - {name: v, address: 192.0.2.1, port: 80, protocol: tcp, pool: p}
`
	_, err := Parse([]byte(y))
	if err == nil || !strings.Contains(err.Error(), `line 4: persistence_profiles[0] (a): unknown field "timout" (did you mean "timeout"?)`) {
		t.Fatalf("got %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		d    int
	}{
		{"timeout", "timeout", 0}, {"timout", "timeout", 1}, {"tiemout", "timeout", 1},
		{"interface", "interfaces", 1}, {"colour", "timeout", 5}, {"", "ab", 2},
	} {
		if got := editDistance(c.a, c.b); got != c.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.d)
		}
	}
}

// checkParse parses the config y of a table test's case name: with want
// empty it must be accepted, else refused with an error holding want. It
// returns Parse's error.
func checkParse(t *testing.T, name, y, want string) error {
	t.Helper()
	_, err := Parse([]byte(y))
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", name, err)
	case want != "" && err == nil:
		t.Errorf("%s: accepted, want %q", name, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s:\n got %v\nwant %q", name, err, want)
	}
	return err
}
