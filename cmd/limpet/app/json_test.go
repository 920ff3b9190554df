package app

import (
	"context"
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/userspace/admin"
)

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// badKeys lists every object key of a JSON document that is not snake_case,
// with where it is.
func badKeys(v any, path string, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if !snakeCase.MatchString(k) {
				*out = append(*out, path+"."+k)
			}
			badKeys(c, path+"."+k, out)
		}
	case []any:
		for i, c := range x {
			badKeys(c, path+"["+strconv.Itoa(i)+"]", out)
		}
	}
}

// jsonCommands lists the commands that take -o json, by their full name.
func jsonCommands(cmds []*cli.Command, prefix string) []string {
	var out []string
	for _, c := range cmds {
		name := strings.TrimSpace(prefix + " " + c.Name)
		if slices.Contains(c.Flags, cli.Flag(outputFlag)) {
			out = append(out, name)
		}
		out = append(out, jsonCommands(c.Subcommands, name)...)
	}
	return out
}

// Every -o json output, run against state that fills every section, has
// snake_case keys only (as the README documents them), and every command
// with -o json is checked here.
func TestEveryJSONOutputIsSnakeCase(t *testing.T) {
	// State for the commands that read the pinned maps.
	dp, pin := pinned(t, goodConfig)
	vip := netip.MustParseAddr("203.0.113.10")
	send(t, dp, netip.MustParseAddr("198.51.100.7"), vip, 1000, 80, false)
	send(t, dp, netip.MustParseAddr("198.51.100.8"), vip, 1000, 53, true)

	// A daemon whose status has every optional part.
	st := daemonStatus()
	st.Mirroring = []admin.MirrorPeer{{Address: "192.0.2.2:7946", State: "connected", Since: time.Now(), Sent: 3, Received: 4, LastError: "x"}}
	st.Warnings = []admin.Warning{{Interface: "veth0", Peer: "veth1", PeerNetns: "ns1", Problem: "peer_cannot_receive_redirects", Message: "m", Fix: "f"}}
	st.RedirectErrors = []admin.RedirectErrors{{Interface: "veth0", Ifindex: 3, Error: "EOPNOTSUPP", Hint: "h", Count: 2}}
	st.Pools[0].Members[0].HealthSince = time.Now()
	sock := serveAdmin(t, &fakeDaemon{status: st})

	k := make([]byte, cookie.KeySize)
	codec, _ := cookie.NewCodec([][]byte{k})
	v, _ := codec.Seal(cookie.Payload{Member: netip.MustParseAddrPort("10.1.0.12:8080"), Issued: time.Now(), VirtualServer: "shop"})
	keyFile := writeKey(t, k)
	decapPin, _ := decapPinned(t)

	runs := map[string][]string{
		"stats":            {"--pin-path", pin, "stats", "-o", "json"},
		"persistence dump": {"--pin-path", pin, "persistence", "dump", "-o", "json"},
		"status":           {"status", "--socket", sock, "-o", "json"},
		"cookie decode":    {"cookie", "decode", "--key-file", keyFile, "-o", "json", v},
		"member-decap":     {"member-decap", "--decap-pin-path", decapPin, "--status", "-o", "json"},
	}
	env := &Env{Context: context.Background()}
	cmds := jsonCommands(newApp(env).Commands, "")
	if len(cmds) < len(runs) {
		t.Errorf("found -o json on %v only", cmds)
	}
	for _, name := range cmds {
		if _, ok := runs[name]; !ok {
			t.Errorf("limpet %s has -o json, and this test does not check it", name)
		}
	}
	for name, args := range runs {
		code, out, errOut := limpet(t, args...)
		if code != ExitOK {
			t.Errorf("limpet %s: exit %d: %s", name, code, errOut)
			continue
		}
		var doc any
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Errorf("limpet %s -o json: %v\n%s", name, err, out)
			continue
		}
		var bad []string
		badKeys(doc, "", &bad)
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("limpet %s -o json: keys not in snake_case: %s", name, strings.Join(bad, ", "))
		}
	}
}
