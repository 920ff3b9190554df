package e2e_test

import (
	"encoding/json"
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/test/chromium"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// bgpStatusJSON is the "bgp" part of 'limpet status -o json' that the
// page's BGP section shows.
type bgpStatusJSON struct {
	BGP struct {
		ASN      uint32 `json:"asn"`
		RouterID string `json:"router_id"`
		Draining bool   `json:"draining"`
		Sessions []struct {
			Neighbor         string `json:"neighbor"`
			Description      string `json:"description"`
			PeerASN          uint32 `json:"peer_asn"`
			LocalASN         uint32 `json:"local_asn"`
			State            string `json:"state"`
			PrefixesSent     uint64 `json:"prefixes_sent"`
			PrefixesReceived uint64 `json:"prefixes_received"`
			MD5              bool   `json:"md5_password"`
			Flaps            uint64 `json:"flaps"`
		} `json:"sessions"`
		Announcements []struct {
			Prefix    string `json:"prefix"`
			Announced bool   `json:"announced"`
			Reason    string `json:"reason"`
		} `json:"announcements"`
	} `json:"bgp"`
}

// bgpDOM is what the test reads off the page's BGP section.
type bgpDOM struct {
	Title    string `json:"title"`
	Scripts  int    `json:"scripts"`
	Imgs     int    `json:"imgs"`
	Marker   string `json:"marker"`
	ASN      string `json:"asn"`
	RouterID string `json:"router_id"`
	Draining bool   `json:"draining"`
	Sessions []struct {
		Neighbor    string `json:"neighbor"`
		Description string `json:"description"`
		PeerASN     string `json:"peer_asn"`
		LocalASN    string `json:"local_asn"`
		State       string `json:"state"`
		Since       string `json:"since"`
		MD5         string `json:"md5"`
		Received    string `json:"received"`
		Sent        string `json:"sent"`
		Strip       rect   `json:"strip"`
	} `json:"sessions"`
	VIPs []struct {
		Prefix    string `json:"prefix"`
		Reason    string `json:"reason"`
		Announced string `json:"announced"`
		Why       string `json:"why"`
		Strip     rect   `json:"strip"`
	} `json:"vips"`
	DPR float64 `json:"dpr"`
}

// readBGPDOM reads the BGP section; strip is each row's coloured left
// border, in the viewport, after scrolling the section in: 4 CSS pixels
// centred on the cell's edge (the tables collapse their borders), of which
// the test takes the middle 3.
const readBGPDOM = `(() => {
	const all = s => Array.from(document.querySelectorAll(s));
	const q = s => document.querySelector(s);
	const t = (e, s) => { const x = e.querySelector(s); return x ? x.textContent : null; };
	const strip = e => { const b = e.firstElementChild.getBoundingClientRect(); return {X: b.x - 1.5, Y: b.y, W: 3, H: b.height}; };
	if (q('#bgp')) { q('#bgp').scrollIntoView(); }
	return {
		title: document.title, scripts: document.scripts.length, imgs: document.images.length,
		marker: window.marker || '',
		asn: q('#bgp-asn') ? q('#bgp-asn').textContent : '', router_id: q('#bgp-router-id') ? q('#bgp-router-id').textContent : '',
		draining: !!q('#bgp-draining'),
		sessions: all('tr[data-bgp-neighbor]').map(e => ({neighbor: e.dataset.bgpNeighbor, description: t(e, '.description'),
			peer_asn: t(e, '.peer-asn'), local_asn: t(e, '.local-asn'), state: t(e, '.state'), since: t(e, '.since'), md5: t(e, '.md5'),
			received: t(e, '.received'), sent: t(e, '.sent'), strip: strip(e)})),
		vips: all('tr[data-prefix]').map(e => ({prefix: e.dataset.prefix, reason: e.dataset.reason, announced: t(e, '.announced'),
			why: t(e, '.why'), strip: strip(e)})),
		dpr: window.devicePixelRatio,
	};
})()`

// The status page's BGP section, loaded by Chromium from a node of the
// cluster lab that keeps a TCP MD5 signed session with BIRD: it shows the
// session and the VIP as 'limpet status -o json' reports them (and as BIRD
// sees them: one route imported from the node); a neighbor description
// with markup is text; 'limpet drain' reaches the open page through its
// refresh script (withdrawn, draining), and so does the cancel.
func TestStatusPageBGPInChromium(t *testing.T) {
	t.Parallel()
	bin := chromium.Find(t)
	c := newCluster(t, clusterOpts{clients: 4, password: "md5-s3cret", noStart: true})
	ctx := testCtx(t, 2*time.Minute)
	const desc = `<script>document.title='pwned'</script><img src=x onerror=document.title=1> core-1`
	body, err := os.ReadFile(c.cfg[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(body), "settings:\n", "settings:\n  metrics_listen: 127.0.0.1:9469\n", 1)
	cfg = strings.Replace(cfg, "peer_asn: 65000,", "peer_asn: 65000, description: \""+desc+"\",", 1)
	if cfg == string(body) || !strings.Contains(cfg, "description:") {
		t.Fatalf("the cluster config has no settings or neighbor to extend:\n%s", body)
	}
	writeCheckedConfig(t, c.cfg[0], cfg, 0o600)
	// Two of the three nodes: the page also shows an HA peer that is down.
	c.start(0)
	c.start(1)
	c.waitNexthops(ctx, 2, "nodes 0 and 1 announce")

	status := func() bgpStatusJSON {
		t.Helper()
		out, err := c.cli(0, "status", "-o", "json")
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		var st bgpStatusJSON
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json: %v\n%s", err, out)
		}
		return st
	}
	var st bgpStatusJSON
	waitFor(t, ctx, "node 0's session established with the VIP announced", func() bool {
		st = status()
		return len(st.BGP.Sessions) == 1 && st.BGP.Sessions[0].State == "established" && st.BGP.Sessions[0].PrefixesSent == 1 &&
			len(st.BGP.Announcements) == 1 && st.BGP.Announcements[0].Announced
	})
	// BIRD's side of the session: established, one route imported.
	proto, err := c.router.BIRDC(ctx, "show", "protocols", "all", lab.RouterProtocol(0, false))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(proto, "Established") || !strings.Contains(proto, "1 imported") {
		t.Fatalf("BIRD's session with node 0 is not established with one route imported:\n%s", proto)
	}

	b := chromium.Start(t, bin, chromium.Options{Width: 1280, Height: 1400, Start: func(cmd *exec.Cmd) (<-chan struct{}, error) {
		p, err := c.l.StartCommand(lab.BalancerHost(0), cmd)
		if err != nil {
			return nil, err
		}
		return p.Done(), nil
	}})
	pg := b.NewPage(t)
	pg.Navigate("http://127.0.0.1:9469/")
	var dom bgpDOM
	pg.Eval(readBGPDOM, &dom)

	// The DOM against 'limpet status -o json'.
	if dom.Title != "limpet status" || dom.Scripts != 1 || dom.Imgs != 0 {
		t.Fatalf("title %q, %d scripts, %d images: the page did not load or the description ran as markup", dom.Title, dom.Scripts, dom.Imgs)
	}
	if dom.ASN != fmt.Sprint(st.BGP.ASN) || dom.RouterID != st.BGP.RouterID || dom.Draining {
		t.Errorf("speaker: page AS %q router id %q draining %v, status AS %d router id %s", dom.ASN, dom.RouterID, dom.Draining, st.BGP.ASN, st.BGP.RouterID)
	}
	if len(dom.Sessions) != 1 {
		t.Fatalf("page sessions %+v, status %+v", dom.Sessions, st.BGP.Sessions)
	}
	s, ps := st.BGP.Sessions[0], dom.Sessions[0]
	md5 := map[bool]string{true: "on", false: "off"}[s.MD5]
	if ps.Neighbor != s.Neighbor || ps.Description != s.Description || ps.PeerASN != fmt.Sprint(s.PeerASN) || ps.LocalASN != fmt.Sprint(s.LocalASN) ||
		ps.State != s.State || ps.MD5 != md5 || ps.Received != fmt.Sprint(s.PrefixesReceived) || ps.Sent != fmt.Sprint(s.PrefixesSent) {
		t.Errorf("session: page %+v, status %+v", ps, s)
	}
	if s.Description != desc || ps.MD5 != "on" || ps.Since == "" {
		t.Errorf("session: description %q (want %q as text), MD5 %q (want on), uptime %q", ps.Description, desc, ps.MD5, ps.Since)
	}
	checkVIPs := func(st bgpStatusJSON, dom bgpDOM) {
		t.Helper()
		if len(dom.VIPs) != len(st.BGP.Announcements) {
			t.Fatalf("VIPs: page %+v, status %+v", dom.VIPs, st.BGP.Announcements)
		}
		for i, a := range st.BGP.Announcements {
			v := dom.VIPs[i]
			want := map[bool]string{true: "announced", false: "withdrawn"}[a.Announced]
			if v.Prefix != a.Prefix || v.Reason != a.Reason || v.Announced != want || v.Why == "" {
				t.Errorf("VIP %d: page %+v, status %+v", i, v, a)
			}
		}
	}
	checkVIPs(st, dom)
	if dom.VIPs[0].Prefix != c.prefix.String() {
		t.Errorf("the page's VIP is %s, want %s", dom.VIPs[0].Prefix, c.prefix)
	}

	// The screenshot: the BGP section in view, the established session's
	// and the announced VIP's rows marked green.
	img, path := screenshot(t, pg, "status-page-bgp.png")
	dpr := pixelRatio(dom.DPR)
	green, orange := color.RGBA{0x1b, 0x7f, 0x3b, 255}, color.RGBA{0xb8, 0x6e, 0x00, 255}
	sg, vg := share(img, ps.Strip, dpr, green), share(img, dom.VIPs[0].Strip, dpr, green)
	t.Logf("screenshot %s (%dx%d): session row %.0f%% green, VIP row %.0f%% green", path, img.Bounds().Dx(), img.Bounds().Dy(), 100*sg, 100*vg)
	if sg < 0.6 || vg < 0.6 {
		t.Fatalf("the screenshot does not show the BGP rows: session strip %.2f green (%+v), VIP strip %.2f green (%+v)", sg, ps.Strip, vg, dom.VIPs[0].Strip)
	}

	// limpet drain, with the page open: its refresh shows the VIP
	// withdrawn for draining, as the status says, and BIRD drops node 0.
	pg.Eval(`(() => { window.marker = 'same page'; return true; })()`, nil)
	if out, err := c.cli(0, "drain"); err != nil || !strings.Contains(out, "withdrawn") {
		t.Fatalf("limpet drain: %v %s", err, out)
	}
	took := c.waitNexthops(ctx, 1, "limpet drain withdraws node 0")
	if slices.Contains(c.nexthops(), c.nodeAddr(0)) {
		t.Fatalf("node 0 is still a next hop after limpet drain: %v", c.nexthops())
	}
	refreshed := func(what string, ok func(bgpDOM) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			pg.Eval(readBGPDOM, &dom)
			if dom.Marker != "same page" {
				t.Fatal("the page reloaded instead of refreshing in place")
			}
			if ok(dom) {
				return time.Since(start)
			}
			if ctx.Err() != nil || time.Since(start) > 3*5*time.Second {
				t.Fatalf("the page's refresh did not show %s: %+v", what, dom)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	shown := refreshed("the VIP withdrawn for draining", func(d bgpDOM) bool {
		return d.Draining && len(d.VIPs) == 1 && d.VIPs[0].Reason == "draining"
	})
	st = status()
	if !st.BGP.Draining || st.BGP.Announcements[0].Announced || st.BGP.Announcements[0].Reason != "draining" {
		t.Fatalf("status after limpet drain: %+v", st.BGP)
	}
	checkVIPs(st, dom)
	if len(dom.Sessions) != 1 || dom.Sessions[0].State != "established" || dom.Sessions[0].Sent != "0" {
		t.Errorf("while draining the session stays up with nothing advertised; page %+v", dom.Sessions)
	}
	drainImg, _ := screenshot(t, pg, "status-page-bgp-draining.png")
	if o := share(drainImg, dom.VIPs[0].Strip, dpr, orange); o < 0.6 {
		t.Errorf("the draining VIP's row is %.2f orange in the screenshot, want its drain colour", o)
	}
	t.Logf("limpet drain: BIRD's route lost node 0 %.2fs after limpet drain returned; the open page showed it withdrawn (draining) %.1fs later (refresh every 5s)", took.Seconds(), shown.Seconds())

	if out, err := c.cli(0, "drain", "--cancel"); err != nil {
		t.Fatalf("limpet drain --cancel: %v %s", err, out)
	}
	c.waitNexthops(ctx, 2, "drain cancelled")
	refreshed("the VIP announced again", func(d bgpDOM) bool {
		return !d.Draining && len(d.VIPs) == 1 && d.VIPs[0].Announced == "announced" && len(d.Sessions) == 1 && d.Sessions[0].Sent == "1"
	})
	st = status()
	checkVIPs(st, dom)
	if s := st.BGP.Sessions[0]; s.State != "established" || s.Flaps != 0 {
		t.Errorf("the session went down across the drain: %+v", s)
	}
	if dom.Title != "limpet status" || dom.Scripts != 1 || dom.Imgs != 0 {
		t.Fatalf("after the refreshes: title %q, %d scripts, %d images", dom.Title, dom.Scripts, dom.Imgs)
	}
}
