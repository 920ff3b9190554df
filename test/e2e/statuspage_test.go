package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/chromium"
	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// statusJSON is the part of 'limpet status -o json' the page shows.
type statusJSON struct {
	Interfaces []struct {
		Name    string `json:"name"`
		XDPMode string `json:"xdp_mode"`
	} `json:"interfaces"`
	VirtualServers []struct {
		Name string `json:"name"`
		Pool string `json:"pool"`
	} `json:"virtual_servers"`
	Pools []struct {
		Name    string `json:"name"`
		Members []struct {
			Name              string `json:"name"`
			State             string `json:"state"`
			Health            string `json:"health"`
			ActiveConnections uint64 `json:"active_connections"`
		} `json:"members"`
	} `json:"pools"`
	Tables []struct {
		ID         uint32 `json:"table"`
		Entries    int    `json:"entries"`
		MaxEntries int    `json:"max_entries"`
	} `json:"tables"`
	LastReloadError string `json:"last_reload_error"`
}

// domState is what the test reads off the rendered page.
type domState struct {
	Title      string   `json:"title"`
	Interfaces []string `json:"interfaces"`
	VS         []struct {
		Name      string `json:"name"`
		InService string `json:"in_service"`
	} `json:"vs"`
	Members []struct {
		Pool   string `json:"pool"`
		Name   string `json:"name"`
		State  string `json:"state"`
		Health string `json:"health"`
		Active string `json:"active"`
	} `json:"members"`
	Tables []struct {
		ID      string `json:"id"`
		Entries string `json:"entries"`
		Max     string `json:"max"`
		Meter   string `json:"meter"`
	} `json:"tables"`
	Lookup []struct {
		Server string `json:"server"`
		Member string `json:"member"`
	} `json:"lookup"`
	ReloadError string `json:"reload_error"`
	Scripts     int    `json:"scripts"`
	// Rects of the page's own elements, in CSS pixels.
	Header rect `json:"header"`
	Badge  rect `json:"badge"`
	Meter  rect `json:"meter"`
	DPR    float64
}

type rect struct{ X, Y, W, H float64 }

const readDOM = `(() => {
	const all = s => Array.from(document.querySelectorAll(s));
	const q = s => document.querySelector(s);
	const r = e => { const b = e.getBoundingClientRect(); return {X: b.x, Y: b.y, W: b.width, H: b.height}; };
	return {
		title: document.title,
		interfaces: all('#interfaces .iface').map(e => e.textContent),
		vs: all('article[data-vs]').map(e => ({name: e.dataset.vs, in_service: e.querySelector('.in-service').textContent})),
		members: all('tr[data-member]').map(e => ({pool: e.dataset.pool, name: e.dataset.member,
			state: e.querySelector('.state').textContent, health: e.querySelector('.health').textContent,
			active: e.querySelector('.active').textContent})),
		tables: all('tr[data-table]').map(e => ({id: e.dataset.table, entries: e.querySelector('.entries').textContent,
			max: e.querySelector('.max').textContent, meter: e.querySelector('meter').getAttribute('value')})),
		lookup: all('#lookup-result tr[data-lookup-table]').map(e => ({server: e.querySelector('.server').textContent,
			member: e.querySelector('.member').textContent})),
		reload_error: q('#reload-error .detail') ? q('#reload-error .detail').textContent : '',
		scripts: document.scripts.length,
		header: r(q('header#top')), badge: r(q('.health-up')), meter: r(q('tr[data-table] meter')),
		DPR: window.devicePixelRatio,
	};
})()`

// artifactDir is where tests leave files for people to look at.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testutil.RepoRoot(), "bin", "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// screenshot saves what the page shows into the artifacts as name, and
// returns it decoded, with its path.
func screenshot(t *testing.T, pg *chromium.Page, name string) (image.Image, string) {
	t.Helper()
	shot := pg.Screenshot()
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	return img, path
}

// pixelRatio is the page's device pixel ratio, 1 where it did not say.
func pixelRatio(dpr float64) float64 {
	if dpr == 0 {
		return 1
	}
	return dpr
}

// share is the fraction of r's pixels within 24 (per channel) of want.
func share(img image.Image, r rect, dpr float64, want color.RGBA) float64 {
	b := image.Rect(int(r.X*dpr), int(r.Y*dpr), int((r.X+r.W)*dpr), int((r.Y+r.H)*dpr)).Intersect(img.Bounds())
	if b.Empty() {
		return 0
	}
	near := func(a, b uint8) bool { d := int(a) - int(b); return d > -24 && d < 24 }
	n, hit := 0, 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			n++
			if near(c.R, want.R) && near(c.G, want.G) && near(c.B, want.B) {
				hit++
			}
		}
	}
	return float64(hit) / float64(n)
}

// The status page, loaded by Chromium from a running 'limpet run' in the
// lab (through settings.metrics_auth): the DOM shows what 'limpet status -o
// json' says, the client lookup finds what 'persistence dump' has, the
// screenshot shows the page's own elements (header, health badge, fill
// bar) in their colours, and a member named <script> in a refused reload
// is shown as text.
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	bin := chromium.Find(t)
	l := newLab(t, lab.Spec{MemberCount: 3, ClientAddrs4: 12})
	ctx := testCtx(t, 120*time.Second)
	cfg := writeWebConfig(t, l, 0.2)
	pwFile := filepath.Join(l.RunDir(), "metrics.password")
	const user, pass = "ops", "page-s3cret"
	if err := os.WriteFile(pwFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body, _ := os.ReadFile(cfg)
	good := strings.Replace(string(body), "settings:\n", fmt.Sprintf("settings:\n  metrics_listen: 127.0.0.1:9469\n  metrics_auth: {type: basic, username: %s, password_file: %s}\n", user, pwFile), 1)
	good = strings.Replace(good, "pools:\n  - name: web\n", "health_monitors:\n  - {name: tcp80, type: tcp, interval: 0.3, rise: 1, fall: 2}\npools:\n  - name: web\n    health_monitor: tcp80\n", 1)
	writeCheckedConfig(t, cfg, good, 0o644)
	startLimpet(t, l, cfg)

	// Traffic: every client one request; one client keeps a connection open.
	dst := netip.AddrPortFrom(l.VIP4(), 80)
	clients := l.ClientAddrs4()
	for _, c := range clients {
		if _, err := l.WaitGet(ctx, c, lab.URL(dst, "/")); err != nil {
			t.Fatal(err)
		}
	}
	held, err := l.Dial(ctx, "tcp", clients[0], dst)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	// Without credentials, / and /metrics answer 401.
	metricsAddr := netip.MustParseAddrPort("127.0.0.1:9469")
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return l.DialFrom(ctx, lab.HostBalancer, "tcp", metricsAddr.Addr(), metricsAddr)
		}}}
	for _, path := range []string{"/", "/metrics"} {
		for _, auth := range []string{"", "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":wrong")), "Bearer " + pass} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+metricsAddr.String()+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("GET %s with %q: %d %q, want 401 with a Basic challenge", path, auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}

	// The status the page must match, once the monitor has a verdict and
	// the sweep has counted the entries.
	var st statusJSON
	waitFor(t, ctx, "health verdicts and table entries", func() bool {
		st = statusJSON{}
		if err := json.Unmarshal(limpetCLI(t, ctx, l, "status", "-o", "json"), &st); err != nil {
			t.Fatal(err)
		}
		up := 0
		for _, p := range st.Pools {
			for _, m := range p.Members {
				if m.Health == "up" {
					up++
				}
			}
		}
		return up == 3 && len(st.Tables) == 1 && st.Tables[0].Entries == len(clients)
	})
	client := clients[0]
	entries := dump(t, ctx, l, "web")

	c := chromium.Start(t, bin, chromium.Options{Start: func(cmd *exec.Cmd) (<-chan struct{}, error) {
		p, err := l.StartCommand(lab.HostBalancer, cmd)
		if err != nil {
			return nil, err
		}
		return p.Done(), nil
	}})
	pg := c.NewPage(t)
	if _, err := c.Call(pg.Session, "Network.enable", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(pg.Session, "Network.setExtraHTTPHeaders", map[string]any{"headers": map[string]string{
		"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}}); err != nil {
		t.Fatal(err)
	}
	pg.Navigate("http://" + metricsAddr.String() + "/?client=" + client.String())
	var dom domState
	pg.Eval(readDOM, &dom)

	// The DOM against 'limpet status -o json'.
	if dom.Title != "limpet status" {
		t.Fatalf("page title %q: the page did not load (%+v)", dom.Title, dom)
	}
	var wantIfs []string
	for _, i := range st.Interfaces {
		wantIfs = append(wantIfs, i.Name+" ("+i.XDPMode+")")
	}
	if !slices.Equal(slices.Sorted(slices.Values(dom.Interfaces)), slices.Sorted(slices.Values(wantIfs))) {
		t.Errorf("interfaces: page %v, status %v", dom.Interfaces, wantIfs)
	}
	if len(dom.VS) != len(st.VirtualServers) || dom.VS[0].Name != "web" || dom.VS[0].InService != "3/3" {
		t.Errorf("virtual servers: page %+v, status %+v", dom.VS, st.VirtualServers)
	}
	type mk struct{ pool, name string }
	want := map[mk]string{}
	for _, p := range st.Pools {
		for _, m := range p.Members {
			want[mk{p.Name, m.Name}] = fmt.Sprintf("%s|%s|%d", m.State, m.Health, m.ActiveConnections)
		}
	}
	var active uint64
	for _, m := range dom.Members {
		got := m.State + "|" + m.Health + "|" + m.Active
		if want[mk{m.Pool, m.Name}] != got {
			t.Errorf("member %s/%s: page %q, status %q", m.Pool, m.Name, got, want[mk{m.Pool, m.Name}])
		}
		delete(want, mk{m.Pool, m.Name})
		var n uint64
		fmt.Sscan(m.Active, &n)
		active += n
	}
	if len(want) > 0 {
		t.Errorf("members in the status but not on the page: %v", want)
	}
	if active != 1 {
		t.Errorf("the page shows %d active connections, want the 1 held open", active)
	}
	if len(dom.Tables) != 1 || dom.Tables[0].Entries != fmt.Sprint(st.Tables[0].Entries) || dom.Tables[0].Max != fmt.Sprint(st.Tables[0].MaxEntries) ||
		dom.Tables[0].Meter != dom.Tables[0].Entries {
		t.Errorf("tables: page %+v, status %+v", dom.Tables, st.Tables)
	}
	e, ok := entries[client.String()]
	if !ok || len(dom.Lookup) != 1 || dom.Lookup[0].Member != e.Member || !strings.HasPrefix(dom.Lookup[0].Server, e.Server) {
		t.Errorf("lookup of %s: page %+v, persistence dump %+v", client, dom.Lookup, e)
	}

	// The screenshot shows the page's own elements.
	img, path := screenshot(t, pg, "status-page.png")
	dpr := pixelRatio(dom.DPR)
	head := share(img, dom.Header, dpr, color.RGBA{0x1d, 0x35, 0x57, 255})
	badge := share(img, dom.Badge, dpr, color.RGBA{0x1b, 0x7f, 0x3b, 255})
	white := share(img, dom.Meter, dpr, color.RGBA{255, 255, 255, 255})
	t.Logf("screenshot %s (%dx%d): header %.0f%% #1d3557, health badge %.0f%% #1b7f3b, fill bar %.0f%% white",
		path, img.Bounds().Dx(), img.Bounds().Dy(), 100*head, 100*badge, 100*white)
	if head < 0.6 || badge < 0.4 || white > 0.9 || dom.Meter.W < 20 {
		t.Fatalf("the screenshot does not show the page's elements: header %.2f dark blue, badge %.2f green, meter %.2f white (%+v)", head, badge, white, dom.Meter)
	}

	// A member named <script>: the reload is refused, and the page shows
	// the refusal, name included, as text.
	bad := strings.Replace(good, "name: m1,", `name: "<script>document.title='pwned'</script>",`, 1)
	if bad == good {
		t.Fatal("the config has no member m1 to rename")
	}
	if err := os.WriteFile(cfg, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, limpetBin(t), "--pin-path", l.PinDir(), "reload").CombinedOutput(); err == nil {
		t.Fatalf("reload with a member named <script> succeeded:\n%s", out)
	}
	pg.Do("Page.reload", map[string]any{"ignoreCache": true})
	pg.Eval(readDOM, &dom)
	if dom.Title != "limpet status" || dom.Scripts != 1 {
		t.Fatalf("after the refused reload: title %q, %d scripts: the member name ran as markup", dom.Title, dom.Scripts)
	}
	if !strings.Contains(dom.ReloadError, `<script>document.title='pwned'</script>`) {
		t.Fatalf("the reload error on the page reads %q, want the member name as text", dom.ReloadError)
	}
	if err := os.WriteFile(filepath.Join(artifactDir(t), "status-page-refused-reload.png"), pg.Screenshot(), 0o644); err != nil {
		t.Fatal(err)
	}
}
