package daemon

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/userspace/bgp"
	"github.com/limpet-lb/limpet/userspace/desired"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// bgpEvalInterval is how often the main loop re-evaluates what to
// announce (it also does at once after a health, admin or drain change).
const bgpEvalInterval = 100 * time.Millisecond

// bgpState is the daemon's side of BGP. The main loop owns it; status
// readers see the copies under daemon.mu.
type bgpState struct {
	spec    *bgp.Spec
	speaker *bgp.Speaker
	ann     *bgp.Announcer
	routes  []bgp.Route // what the speaker was last told

	draining, stopping bool
	synced             bool
	syncedAt           time.Time
	syncDetail         string
	lastReasons        map[string]bgp.Reason
	md5                md5Counters
	md5Checked         time.Time
}

// startBGP starts the speaker when the config has a bgp section. Nothing
// is announced until the first evaluation finds the node ready.
func (d *daemon) startBGP(ctx context.Context, want *desired.Desired) error {
	spec, err := want.BGP, want.BGPErr
	if err != nil {
		return &ConfigError{err}
	}
	if spec == nil {
		return nil
	}
	sp, err := bgp.New(spec.Config, d.log)
	if err != nil {
		return &ConfigError{err}
	}
	if err := sp.Start(ctx); err != nil {
		return err
	}
	b := &bgpState{spec: spec, speaker: sp, ann: bgp.NewAnnouncer(spec.VIPs, spec.Damping), lastReasons: map[string]bgp.Reason{}}
	b.md5, _ = readMD5Counters()
	d.bgp = b
	d.evaluateBGP()
	return nil
}

// reloadBGP follows a reload: the VIPs and their attributes change; the
// speaker's own settings (ASN, neighbours, passwords) need a restart.
func (d *daemon) reloadBGP(want *desired.Desired) {
	if d.bgp == nil {
		if want.HasBGP {
			d.log.Warn("reload: a bgp section was added; it takes effect at the next start of limpet run")
		}
		return
	}
	spec, err := want.BGP, want.BGPErr
	if err != nil || spec == nil {
		d.log.Warn("reload: the bgp section was removed or is invalid; the running BGP settings stay until the next start", "error", err)
		return
	}
	if !sameSpeaker(spec.Config, d.bgp.spec.Config) {
		d.log.Warn("reload: BGP speaker settings (asn, router_id, neighbors, next hops) changed; they take effect at the next start of limpet run; virtual server announcements follow the new config now")
	}
	d.bgp.ann.SetVIPs(spec.VIPs)
	d.bgp.ann.SetDamping(spec.Damping)
	d.bgp.spec.VIPs, d.bgp.spec.Damping, d.bgp.spec.ShutdownGrace, d.bgp.spec.SyncTimeout = spec.VIPs, spec.Damping, spec.ShutdownGrace, spec.SyncTimeout
	d.evaluateBGP()
}

func sameSpeaker(a, b bgp.Config) bool {
	if a.ASN != b.ASN || a.RouterID != b.RouterID || a.ListenPort != b.ListenPort || a.NextHop4 != b.NextHop4 || a.NextHop6 != b.NextHop6 || len(a.Neighbors) != len(b.Neighbors) {
		return false
	}
	for i := range a.Neighbors {
		x, y := a.Neighbors[i], b.Neighbors[i]
		if x.Address != y.Address || x.PeerASN != y.PeerASN || x.Password != y.Password || x.Port != y.Port || x.HoldTime != y.HoldTime ||
			x.Keepalive != y.Keepalive || x.ConnectRetry != y.ConnectRetry || x.MultihopTTL != y.MultihopTTL || x.Passive != y.Passive ||
			!slices.Equal(x.Families, y.Families) {
			return false
		}
	}
	return true
}

// evaluateBGP decides what to announce and tells the speaker. Main loop.
func (d *daemon) evaluateBGP() {
	b := d.bgp
	if b == nil {
		return
	}
	now := time.Now()
	fwd, fwdDetail := d.forwarding()
	if !b.synced {
		b.synced, b.syncDetail = d.syncDone(now)
		if b.synced {
			b.syncedAt = now
			d.log.Info("bgp: HA bulk sync finished; VIPs may be announced", "detail", b.syncDetail)
		}
	}
	in := bgp.Input{Now: now, Forwarding: fwd, ForwardingDetail: fwdDetail, Synced: b.synced, SyncDetail: b.syncDetail,
		Draining: b.draining, Stopping: b.stopping, InService: d.inService()}
	routes := b.ann.Evaluate(in)
	if !slices.EqualFunc(routes, b.routes, func(x, y bgp.Route) bool {
		return x.Prefix == y.Prefix && slices.Equal(x.Communities, y.Communities) && slices.Equal(x.LargeCommunities, y.LargeCommunities) && x.LocalPref == y.LocalPref
	}) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.speaker.Announce(ctx, routes)
		cancel()
		if err != nil {
			d.log.Error("bgp: updating announcements", "error", err)
		} else {
			b.routes = routes
		}
	}
	anns := b.ann.Announcements()
	for _, a := range anns {
		if b.lastReasons[a.Prefix] != a.Reason {
			if a.Announced {
				d.log.Info("bgp: VIP announced", "prefix", a.Prefix, "virtual_servers", strings.Join(a.VirtualServers, ","))
			} else {
				d.log.Info("bgp: VIP not announced", "prefix", a.Prefix, "reason", string(a.Reason), "detail", a.Detail)
			}
			b.lastReasons[a.Prefix] = a.Reason
		}
	}
	if now.Sub(b.md5Checked) >= time.Second {
		b.md5Checked = now
		d.checkMD5()
		// Sessions notices the notifications that refused an opening session.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b.speaker.Sessions(ctx)
		cancel()
	}
	d.mu.Lock()
	d.bgpAnns, d.bgpDamping, d.bgpDraining = anns, b.spec.Damping, b.draining
	d.syncKnown, d.synced, d.syncedAt, d.syncDetail = true, b.synced, b.syncedAt, b.syncDetail
	d.mu.Unlock()
}

// forwarding reports whether the datapath can forward: attached to every
// interface, each of them up and with an XDP program on it.
func (d *daemon) forwarding() (bool, string) {
	d.mu.Lock()
	names := make([]string, 0, len(d.ifaces))
	for n := range d.ifaces {
		names = append(names, n)
	}
	d.mu.Unlock()
	if len(names) == 0 {
		return false, "not attached to any interface"
	}
	slices.Sort(names)
	for _, n := range names {
		lk, err := netlink.LinkByName(n)
		if err != nil {
			return false, fmt.Sprintf("interface %s: %v", n, err)
		}
		at := lk.Attrs()
		switch {
		case at.Flags&net.FlagUp == 0:
			return false, fmt.Sprintf("interface %s is down", n)
		case at.OperState == netlink.OperDown || at.OperState == netlink.OperLowerLayerDown || at.OperState == netlink.OperNotPresent:
			return false, fmt.Sprintf("interface %s has no carrier (%s)", n, at.OperState)
		case at.Xdp == nil || !at.Xdp.Attached:
			return false, fmt.Sprintf("interface %s has lost its XDP program", n)
		}
	}
	return true, ""
}

// inService counts the members in service of every l4 virtual server's
// pool: enabled, not disabled by an operator, not found down by a monitor.
func (d *daemon) inService() map[string]int {
	meta, _, _, down := d.snapshot()
	perPool := map[string]int{}
	for _, m := range meta.Members {
		if m.Effective() == desired.MemberEnabled && !down[m.Key] {
			perPool[m.Pool]++
		}
	}
	out := map[string]int{}
	for _, vs := range meta.VirtualServers {
		out[vs.Name] = perPool[vs.Pool]
	}
	return out
}

// syncDone reports whether the node's HA bulk sync has finished: every
// configured mirroring peer has sent its bulk sync since the start, or has
// stayed unreachable for the sync timeout (a cold start of the cluster).
// A peer that is connected and syncing is waited for, up to three sync
// timeouts.
func (d *daemon) syncDone(now time.Time) (bool, string) {
	if d.mirror == nil {
		return true, "no HA mirroring configured"
	}
	timeout := d.bgp.spec.SyncTimeout
	age := now.Sub(d.mirror.Started())
	var waiting, synced, skipped []string
	for _, p := range d.mirror.Status() {
		if !p.Configured {
			continue
		}
		switch {
		case !p.LastSync.IsZero():
			synced = append(synced, p.Addr)
		case (p.State == mirror.StateSyncing || p.State == mirror.StateAuthenticating || p.State == mirror.StateUp) && age < 3*timeout:
			waiting = append(waiting, p.Addr+" ("+string(p.State)+")")
		case age >= timeout:
			skipped = append(skipped, p.Addr)
		default:
			waiting = append(waiting, fmt.Sprintf("%s (%s, given up on in %.1fs)", p.Addr, p.State, (timeout-age).Seconds()))
		}
	}
	if len(waiting) > 0 {
		return false, "waiting for the bulk sync of " + strings.Join(waiting, ", ")
	}
	msg := "bulk sync received from " + listOrNone(synced)
	if len(skipped) > 0 {
		msg += fmt.Sprintf("; not waited for %s (unreachable for %s)", strings.Join(skipped, ", "), timeout)
	}
	return true, msg
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "no peer"
	}
	return strings.Join(s, ", ")
}

// setDraining is limpet drain: withdraw every VIP (or announce again).
func (d *daemon) setDraining(on bool) error {
	return d.exec(func() error {
		if d.bgp == nil {
			return fmt.Errorf("this node has no bgp section: there is nothing to withdraw")
		}
		if d.bgp.draining != on {
			d.bgp.draining = on
			if on {
				d.log.Info("drain: withdrawing every VIP; open flows keep being served")
			} else {
				d.log.Info("drain cancelled: VIPs are announced again as they qualify")
			}
		}
		d.evaluateBGP()
		return nil
	})
}

// beginShutdown withdraws everything for the shutdown grace. It returns
// how long to keep serving: 0 when nothing was announced.
func (d *daemon) beginShutdown() time.Duration {
	b := d.bgp
	if b == nil {
		return 0
	}
	had := len(b.routes) > 0
	b.stopping = true
	d.evaluateBGP()
	if !had {
		return 0
	}
	return b.spec.ShutdownGrace
}

// bgpStatus is the node's BGP view (nil without a bgp section).
func (d *daemon) bgpStatus() *bgp.Status {
	b := d.bgp
	if b == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st := &bgp.Status{ASN: b.spec.Config.ASN, RouterID: b.spec.Config.RouterID.String(), ListenPort: b.spec.Config.ListenPort,
		Sessions: b.speaker.Sessions(ctx)}
	d.mu.Lock()
	st.Announcements = slices.Clone(d.bgpAnns)
	st.DampingSeconds = d.bgpDamping.Seconds()
	st.Draining = d.bgpDraining
	d.mu.Unlock()
	return st
}

// md5Counters are the kernel's TCP MD5 signature counters of the node's
// network namespace (/proc/net/netstat, TcpExt).
type md5Counters struct{ notFound, unexpected, failure uint64 }

func readMD5Counters() (md5Counters, error) {
	// /proc/thread-self/net, not /proc/net (= /proc/self/net), which shows
	// the namespace of the process's main thread: the veth checks run on
	// threads that join other namespaces and exit, and the main thread,
	// which cannot exit, stays in that namespace for good when one of them
	// ran on it. The goroutine reading here runs on an ordinary thread, in
	// the daemon's own namespace.
	f, err := os.Open("/proc/thread-self/net/netstat")
	if err != nil {
		return md5Counters{}, err
	}
	defer f.Close()
	var c md5Counters
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i := 1; i < len(fields) && i < len(names); i++ {
			v, _ := strconv.ParseUint(fields[i], 10, 64)
			switch names[i] {
			case "TCPMD5NotFound":
				c.notFound = v
			case "TCPMD5Unexpected":
				c.unexpected = v
			case "TCPMD5Failure":
				c.failure = v
			}
		}
		break
	}
	return c, sc.Err()
}

// checkMD5 turns TCP segments the kernel dropped for their MD5 signature
// into a reason on the sessions that are not established: a wrong or
// missing password shows up nowhere else (the handshake never completes).
func (d *daemon) checkMD5() {
	b := d.bgp
	c, err := readMD5Counters()
	if err != nil {
		return
	}
	prev := b.md5
	b.md5 = c
	var problems []string
	if c.failure > prev.failure {
		problems = append(problems, "TCP segments with a wrong MD5 signature arrive (the neighbor's password differs)")
	}
	if c.notFound > prev.notFound {
		problems = append(problems, "TCP segments without the MD5 signature this node expects arrive (the neighbor has no password)")
	}
	if c.unexpected > prev.unexpected {
		problems = append(problems, "TCP segments signed with MD5 arrive although this node has no password for them")
	}
	if len(problems) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// The counters are the namespace's: blame the sessions that are not up.
	for _, s := range b.speaker.Sessions(ctx) {
		if !s.Established() {
			b.speaker.NoteProblem(s.Neighbor, "refused by the kernel: "+strings.Join(problems, "; "))
		}
	}
}
