package statuspage

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/test/chromium"
	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/bgp"
	"github.com/limpet-lb/limpet/userspace/metrics"
)

// hostile is what an attacker might get into a name or an error message;
// hostileLookup into the lookup form (which takes 64 bytes at most).
const (
	hostile       = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`
	hostileLookup = `<script>window.pwned=3</script>`
)

type fakeSource struct {
	mu      sync.Mutex
	st      admin.Status
	flows   uint64
	lookups []netip.Addr
}

func (f *fakeSource) Status() admin.Status { f.mu.Lock(); defer f.mu.Unlock(); return f.st }
func (f *fakeSource) VirtualServers() ([]metrics.VirtualServer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []metrics.VirtualServer{{Name: "web", Protocol: "tcp", Counters: loader.VSCounters{NewFlows: f.flows}}}, nil
}
func (f *fakeSource) Members() ([]metrics.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []metrics.Member{{Pool: "web", Name: hostile, Counters: loader.MemberCounters{NewFlows: f.flows}}}, nil
}
func (f *fakeSource) Tables() ([]metrics.Table, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return []metrics.Table{{ID: 0, Inserts: f.flows}}, nil
}
func (f *fakeSource) LookupClient(a netip.Addr) ([]Match, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups = append(f.lookups, a)
	if a == netip.MustParseAddr("198.51.100.7") {
		left := 42 * time.Second
		return []Match{{Table: 0, Profile: "sticky", VirtualServer: "web", Key: a.String(), Found: true, Server: "10.0.0.1:80",
			Member: hostile, State: "counting down", Expires: &left}}, nil
	}
	return []Match{{Table: 0, Profile: "sticky", VirtualServer: "web", Key: a.String()}}, nil
}

func newFake() *fakeSource {
	return &fakeSource{st: admin.Status{
		Version: "test", PID: 42, StartedAt: time.Now().Add(-90 * time.Minute), ConfigPath: "/etc/limpet/limpet.yaml",
		AppliedAt: time.Now(), LastReloadError: `pools[0].members[0].name: "` + hostile + `" must be 1-63 letters`,
		Interfaces:     []admin.Interface{{Name: "eth0", XDPMode: "native"}},
		VirtualServers: []admin.VirtualServer{{Name: "web", Type: "l4", Address: "192.0.2.10", Port: 80, Protocol: "tcp", Forwarding: "nat", Pool: "web", Profile: "sticky"}},
		Pools: []admin.Pool{{Name: "web", Algorithm: "round_robin", Members: []admin.Member{
			{Name: hostile, Address: "10.0.0.1", Port: 80, Weight: 1, State: "enabled", Monitor: "m", Health: admin.HealthDown, HealthDetail: hostile, ActiveConnections: 3},
			{Name: "m2", Address: "10.0.0.2", Port: 80, Weight: 2, State: "enabled", Monitor: "m", Health: admin.HealthUp, ActiveConnections: 5},
		}}},
		Tables:    []admin.Table{{ID: 0, Profile: "sticky", VirtualServer: "web", Entries: 700, MaxEntries: 1000, PurgeWhenFull: true, Timeout: 300}},
		Mirroring: []admin.MirrorPeer{{Address: "192.0.2.3:7946", State: "up", Since: time.Now().Add(-time.Minute), Sent: 10, LastError: hostile}},
		Cluster:   &admin.Cluster{Mode: "active_active", Synced: true, PeersUp: 1, Peers: 1},
		BGP:       fakeBGP(),
	}}
}

// fakeBGP has one session up, one failing with a hostile description and
// error, and a VIP in each announce state the page words differently.
func fakeBGP() *bgp.Status {
	now := time.Now()
	at := now.Add(30 * time.Second)
	return &bgp.Status{ASN: 65001, RouterID: "192.0.2.1", DampingSeconds: 60,
		Sessions: []bgp.Session{
			{Neighbor: "192.0.2.254", Description: "core-1", PeerASN: 65000, LocalASN: 65001, PeerRouterID: "192.0.2.254", State: "established",
				Since: now.Add(-75 * time.Second), UptimeSeconds: 75, HoldTimeSeconds: 9, PrefixesSent: 1, PrefixesReceived: 3,
				Families: []string{"ipv4_unicast"}, Password: true},
			{Neighbor: "2001:db8::fe", Description: hostile, PeerASN: 65000, LocalASN: 65001, State: "active", Since: now.Add(-10 * time.Second),
				Families: []string{"ipv6_unicast"}, Flaps: 2, LastError: hostile},
		},
		Announcements: []bgp.Announcement{
			{Prefix: "192.0.2.10/32", VirtualServers: []string{"web"}, Announced: true, Reason: bgp.ReasonAnnounced, Since: now.Add(-time.Minute),
				Changes: 1, Communities: []string{"65001:100"}, LocalPreference: 200},
			{Prefix: "192.0.2.11/32", VirtualServers: []string{hostile}, Reason: bgp.ReasonDamping, Detail: hostile, Since: now, AnnounceAt: &at},
			{Prefix: "2001:db8::10/128", VirtualServers: []string{"web6"}, Reason: bgp.ReasonNoMember, Detail: "no member in service in web6", Since: now},
		}}
}

func get(t *testing.T, srv *httptest.Server, path string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// Every string from outside (names, health errors, reload errors, peer
// errors, the lookup input) is escaped; the page sends a CSP that forbids
// inline script anyway; it is read-only.
func TestPageEscapesAndIsReadOnly(t *testing.T) {
	srv := httptest.NewServer(New(newFake(), nil))
	defer srv.Close()
	code, hdr, body := get(t, srv, "/?client="+url.QueryEscape(hostileLookup))
	if code != 200 {
		t.Fatalf("GET /: %d\n%s", code, body)
	}
	if strings.Contains(body, "<script>window") || strings.Contains(body, "<img src=x") {
		t.Fatalf("the page carries the hostile markup unescaped:\n%s", body)
	}
	if n := strings.Count(body, "&lt;script&gt;window.pwned=1&lt;/script&gt;"); n < 4 {
		t.Fatalf("the hostile name is shown escaped %d times, want it in the member row, health, reload error, peer error and lookup", n)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q", csp)
	}
	if !strings.Contains(body, "not an IPv4 or IPv6 address") {
		t.Fatalf("the hostile lookup input got no error:\n%s", body)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, srv.URL+"/", strings.NewReader("client=1.2.3.4"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /: %d, want 405", m, resp.StatusCode)
		}
	}
	if code, _, _ := get(t, srv, "/static/status.js"); code != 200 {
		t.Errorf("status.js: %d", code)
	}
	if code, _, _ := get(t, srv, "/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
}

// The BGP section shows what bgp.Status holds: each session with its
// state, MD5 and prefix counts; each VIP announced or withdrawn, and why.
func TestBGPSection(t *testing.T) {
	srv := httptest.NewServer(New(newFake(), nil))
	defer srv.Close()
	_, _, body := get(t, srv, "/")
	i := strings.Index(body, `<section id="bgp">`)
	if i < 0 {
		t.Fatalf("no BGP section:\n%s", body)
	}
	sec := body[i:]
	esc := "&lt;script&gt;window.pwned=1&lt;/script&gt;"
	for _, want := range []string{
		`id="bgp-asn">65001<`, `id="bgp-router-id">192.0.2.1<`, `damping interval 1m00s`, `id="bgp-sync" class="ok">finished<`,
		`data-bgp-neighbor="192.0.2.254" data-state="established"`, `class="description">core-1<`, `class="peer-asn">65000<`,
		`class="state">established<`, `class="since">1m15s<`, `class="md5">on<`, `class="num received">3<`, `class="num sent">1<`,
		`data-bgp-neighbor="2001:db8::fe" data-state="active"`, `class="md5">off<`, `class="description">` + esc,
		`class="detail last-error">` + esc,
		`data-prefix="192.0.2.10/32" data-reason="announced"`, `class="announced">announced<`, `communities 65001:100 · local preference 200`,
		`data-prefix="192.0.2.11/32" data-reason="damping"`, `class="announced">withdrawn<`, `damping: servable again`, `(announced in `,
		`data-prefix="2001:db8::10/128" data-reason="no_member_in_service"`, `no healthy member in service`,
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("the BGP section lacks %q", want)
		}
	}
	if strings.Contains(sec, "<script>window") || strings.Contains(sec, "<img src=x") {
		t.Fatalf("the BGP section carries hostile markup unescaped:\n%s", sec)
	}
	if strings.Contains(sec, `id="bgp-draining"`) {
		t.Error("a node that does not drain is shown draining")
	}

	// Draining, and a node without a bgp section.
	f := newFake()
	f.st.BGP.Draining = true
	f.st.BGP.Announcements[0] = bgp.Announcement{Prefix: "192.0.2.10/32", Reason: bgp.ReasonDraining}
	f.st.Cluster = &admin.Cluster{Peers: 2, SyncDetail: "waiting for 192.0.2.3:7946"}
	srv2 := httptest.NewServer(New(f, nil))
	defer srv2.Close()
	_, _, body = get(t, srv2, "/")
	for _, want := range []string{`id="bgp-draining"`, `data-prefix="192.0.2.10/32" data-reason="draining"`, `draining: limpet drain`,
		`class="drain">not finished: waiting for 192.0.2.3:7946<`} {
		if !strings.Contains(body, want) {
			t.Errorf("a draining node's page lacks %q", want)
		}
	}
	f.st.BGP = nil
	if _, _, body = get(t, srv2, "/"); strings.Contains(body, `id="bgp"`) {
		t.Error("a node without a bgp section shows a BGP section")
	}
}

func TestParseClient(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
		err  string
	}{
		{[]string{"198.51.100.7"}, "198.51.100.7", ""},
		{[]string{" 2001:db8::7 "}, "2001:db8::7", ""},
		{[]string{"::ffff:198.51.100.7"}, "198.51.100.7", ""},
		{[]string{""}, "", "enter a client address"},
		{[]string{"198.51.100.0/24"}, "", "not an IPv4 or IPv6 address"},
		{[]string{"fe80::1%eth0"}, "", "no zone"},
		{[]string{"example.com"}, "", "not an IPv4 or IPv6 address"},
		{[]string{strings.Repeat("1", 65)}, "", "too long"},
		{[]string{"1.2.3.4", "5.6.7.8"}, "", "one client address"},
	} {
		a, err := ParseClient(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseClient(%q): %v, want an error about %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || a.String() != tc.want):
			t.Errorf("ParseClient(%q) = %v, %v; want %s", tc.in, a, err, tc.want)
		}
	}
}

// The lookup reaches the source only with a valid address, and shows what
// it found.
func TestLookup(t *testing.T) {
	f := newFake()
	srv := httptest.NewServer(New(f, nil))
	defer srv.Close()
	_, _, body := get(t, srv, "/?client=198.51.100.7")
	if !strings.Contains(body, `class="server">10.0.0.1:80<`) || !strings.Contains(body, "expires in 42s") {
		t.Fatalf("lookup result missing:\n%s", body)
	}
	_, _, body = get(t, srv, "/?client=203.0.113.9")
	if !strings.Contains(body, "No persistence entry for 203.0.113.9") {
		t.Fatalf("a client without entries:\n%s", body)
	}
	get(t, srv, "/?client=nonsense")
	if len(f.lookups) != 2 {
		t.Fatalf("the source saw %d lookups (%v), want 2: invalid input must not reach it", len(f.lookups), f.lookups)
	}
}

// Rates are per second over the window since the last sample at least a
// second old.
func TestRates(t *testing.T) {
	var s sampler
	t0 := time.Now()
	mk := func(at time.Time, n uint64) sample {
		return sample{at: at, vs: map[string]uint64{"web": n}, members: map[string]uint64{}, tables: map[uint32][4]uint64{0: {n, 0, 0, 0}}}
	}
	if r := s.add(mk(t0, 100)); r.VS != nil {
		t.Fatalf("rates before a second sample: %+v", r)
	}
	r := s.add(mk(t0.Add(2*time.Second), 300))
	if r.VS["web"] != 100 || r.Tables[0][0] != 100 || r.Window != 2*time.Second {
		t.Fatalf("rates %+v, want 100/s over 2s", r)
	}
	// A visit 100 ms later reuses the figures instead of a 100 ms window.
	if r2 := s.add(mk(t0.Add(2100*time.Millisecond), 1000)); r2.VS["web"] != 100 {
		t.Fatalf("a quick second visit: %+v", r2)
	}
	if got := formatRate(nil); got != "–" {
		t.Errorf("formatRate(nil) = %q", got)
	}
}

// In a browser: the hostile strings are text, no script of theirs ran, the
// page's own script refreshes the live part in place (the lookup form keeps
// what is being typed), and a failed refresh says so.
func TestBrowserRendersHostileTextAndRefreshes(t *testing.T) {
	bin := chromium.Find(t)
	f := newFake()
	h := New(f, nil)
	var fail sync.Mutex
	failing := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail.Lock()
		bad := failing
		fail.Unlock()
		if bad && r.URL.Path == "/" {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	b := chromium.Start(t, bin, chromium.Options{})
	p := b.NewPage(t)
	p.Navigate(srv.URL + "/?client=" + url.QueryEscape(hostileLookup))

	var got struct {
		Pwned    any    `json:"pwned"`
		Member   string `json:"member"`
		Detail   string `json:"detail"`
		Reload   string `json:"reload"`
		Peer     string `json:"peer"`
		Lookup   string `json:"lookup"`
		Input    string `json:"input"`
		Scripts  int    `json:"scripts"`
		Imgs     int    `json:"imgs"`
		Meter    string `json:"meter"`
		Uptime   string `json:"uptime"`
		VSRate   string `json:"vs_rate"`
		Refreshd string `json:"refreshed"`
		BGPDesc  string `json:"bgp_desc"`
		BGPErr   string `json:"bgp_err"`
		BGPState string `json:"bgp_state"`
		VIPWhy   string `json:"vip_why"`
	}
	read := func() {
		t.Helper()
		p.Eval(`(() => {
			const q = s => document.querySelector(s);
			return {
				pwned: window.pwned === undefined ? null : window.pwned,
				member: q('tr[data-member] td.name').textContent,
				detail: q('tr[data-member] .detail').textContent,
				reload: q('#reload-error .detail').textContent,
				peer: q('tr[data-peer] td.detail').textContent,
				lookup: q('#lookup-error').textContent,
				input: q('#client').value,
				scripts: document.scripts.length,
				imgs: document.images.length,
				meter: q('tr[data-table="0"] meter').getAttribute('value'),
				uptime: q('#uptime').textContent,
				vs_rate: q('[data-vs="web"] .vs-rate').textContent,
				refreshed: q('#refresh-state').textContent,
				bgp_desc: q('tr[data-bgp-neighbor="2001:db8::fe"] .description').textContent,
				bgp_err: q('tr[data-bgp-neighbor="2001:db8::fe"] .last-error').textContent,
				bgp_state: q('tr[data-bgp-neighbor="2001:db8::fe"] .state').textContent,
				vip_why: q('tr[data-prefix="192.0.2.11/32"] .why').textContent,
			};
		})()`, &got)
	}
	read()
	if got.Pwned != nil {
		t.Fatalf("a hostile script ran: window.pwned = %v", got.Pwned)
	}
	for what, text := range map[string]string{"member name": got.Member, "health detail": got.Detail, "reload error": got.Reload, "peer error": got.Peer,
		"BGP neighbor description": got.BGPDesc, "BGP session error": got.BGPErr, "VIP detail": got.VIPWhy} {
		if !strings.Contains(text, hostile) {
			t.Errorf("the %s reads %q, want the hostile string as text", what, text)
		}
	}
	if !strings.Contains(got.Lookup, "not an IPv4 or IPv6 address") || got.Input != hostileLookup {
		t.Errorf("lookup error %q, input %q", got.Lookup, got.Input)
	}
	if got.Scripts != 1 || got.Imgs != 0 {
		t.Errorf("the page has %d scripts and %d images, want only its own script", got.Scripts, got.Imgs)
	}
	if got.Meter != "700" {
		t.Errorf("table meter value %q", got.Meter)
	}

	// The refresh: new counters arrive without a reload; what the user
	// typed in the form stays.
	if got.BGPState != "active" {
		t.Errorf("the failing BGP session reads %q, want active", got.BGPState)
	}
	f.mu.Lock()
	f.flows = 5000
	f.st.BGP = fakeBGP()
	f.st.BGP.Sessions[1].State, f.st.BGP.Sessions[1].UptimeSeconds = "established", 1
	f.mu.Unlock()
	p.Eval(`(() => { document.getElementById('client').value = '192.0.2.55'; window.marker = 'same page'; return true; })()`, nil)
	deadline := time.Now().Add(3 * RefreshSeconds * time.Second)
	for {
		read()
		var marker, input string
		p.Eval(`window.marker`, &marker)
		p.Eval(`document.getElementById('client').value`, &input)
		if strings.HasPrefix(got.Refreshd, "updated ") {
			if marker != "same page" {
				t.Fatal("the page reloaded instead of refreshing in place")
			}
			if input != "192.0.2.55" {
				t.Fatalf("the refresh replaced what was typed in the lookup form: %q", input)
			}
			if got.VSRate == "–" || got.VSRate == "0" {
				t.Fatalf("after the refresh the rate is %q, want the new connections per second", got.VSRate)
			}
			if got.BGPState != "established" {
				t.Fatalf("after the refresh the BGP session reads %q, want established", got.BGPState)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refresh within %ds: %q", 3*RefreshSeconds, got.Refreshd)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fail.Lock()
	failing = true
	fail.Unlock()
	deadline = time.Now().Add(3 * RefreshSeconds * time.Second)
	for {
		read()
		if strings.Contains(got.Refreshd, "refresh failed: HTTP 503") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a failing refresh is not reported: %q", got.Refreshd)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got.Pwned != nil {
		t.Fatalf("a hostile script ran during the refreshes: window.pwned = %v", got.Pwned)
	}
}
