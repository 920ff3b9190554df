package statuspage

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/bgp"
)

// The view: what the template shows, in display terms. pageOf is the one
// place that reads the daemon's status types, so a change to them (or a new
// section, such as BGP sessions) touches this file and the template only.

type pageView struct {
	Version, ConfigPath, PinPath, LastReloadError string
	PID                                           int
	Uptime                                        string
	AppliedAt                                     time.Time
	Generated                                     time.Time
	Interfaces                                    []string
	Refresh                                       int
	// RateWindow says what the per-second figures are averaged over.
	RateWindow     string
	VirtualServers []vsView
	Tables         []tableView
	Peers          []peerView
	// BGP is nil without a bgp section.
	BGP    *bgpView
	Lookup *lookupView
	Errors []string
}

type vsView struct {
	Name, Type, Endpoint, Protocol, Forwarding, Pool, Algorithm, Profile string
	InService, Members                                                   int
	NewConnsPerSec                                                       *float64
	MemberRows                                                           []memberView
}

type memberView struct {
	Pool, Name, Endpoint, State, Health, HealthDetail string
	HealthSince                                       string
	Weight                                            int
	Active                                            uint64
	Max                                               int
	NewConnsPerSec                                    *float64
	// Class is ok, drain or down: the row's colour.
	Class string
}

type tableView struct {
	ID                    uint32
	Profile, Owner        string
	Entries, Max          int
	FillPct               float64
	High, Low             int // meter thresholds: 90% and 70%
	WhenFull, Timeout     string
	Inserts, Expiries     *float64
	Evictions, Rejects    *float64
	RejectsNow, FullClass string
}

type peerView struct {
	Address, State, Since, LastError string
	Sent, Received, Dropped          uint64
	Queue                            int
	Lag                              string
	Class                            string
}

// bgpView is the node's speaker, its sessions and its VIPs, from the same
// bgp.Status that 'limpet status -o json' prints under "bgp".
type bgpView struct {
	ASN        uint32
	RouterID   string
	ListenPort int
	Damping    string
	Draining   bool
	// Sync is the HA bulk sync that gates announcing, when the node
	// mirrors: "finished", or what it waits for.
	Sync, SyncClass string
	Sessions        []sessionView
	Announcements   []announcementView
}

type sessionView struct {
	Neighbor, Description, PeerRouterID string
	PeerASN, LocalASN                   uint32
	// State is GoBGP's FSM state, as in the JSON; Since is how long it has
	// been in it (the uptime while established).
	State, Since string
	Hold         int
	Families     string
	MD5          bool
	Received     uint64
	Sent         uint64
	Flaps        uint64
	LastError    string
	Class        string
}

type announcementView struct {
	Prefix, VirtualServers string
	Announced              bool
	// Reason is the JSON's reason code; Why says it in words.
	Reason, Why, Detail string
	Since               string
	Changes             uint64
	Communities         string
	LocalPref           uint32
	// AnnounceIn is, while damping, the time left before the VIP is
	// announced if it stays servable.
	AnnounceIn string
	Class      string
}

type lookupView struct {
	Query, Client, Error string
	Found                int
	Matches              []Match
}

func endpoint(addr string, port int) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	if port == 0 {
		return a.String()
	}
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func ratePtr(m map[string]float64, key string) *float64 {
	if v, ok := m[key]; ok {
		return &v
	}
	return nil
}

// pageOf turns the daemon's status and the counter rates into the view.
func pageOf(st admin.Status, r Rates, now time.Time) pageView {
	p := pageView{Version: st.Version, PID: st.PID, ConfigPath: st.ConfigPath, PinPath: st.PinPath,
		LastReloadError: st.LastReloadError, AppliedAt: st.AppliedAt, Generated: now, Refresh: RefreshSeconds}
	if !st.StartedAt.IsZero() {
		p.Uptime = formatDuration(now.Sub(st.StartedAt))
	}
	if r.Window > 0 {
		p.RateWindow = formatDuration(r.Window)
	}
	for _, i := range st.Interfaces {
		p.Interfaces = append(p.Interfaces, i.Name+" ("+i.XDPMode+")")
	}
	pools := map[string]*admin.Pool{}
	for i := range st.Pools {
		pools[st.Pools[i].Name] = &st.Pools[i]
	}
	for _, v := range st.VirtualServers {
		vv := vsView{Name: v.Name, Type: v.Type, Endpoint: endpoint(v.Address, v.Port), Protocol: v.Protocol,
			Forwarding: v.Forwarding, Pool: v.Pool, Profile: v.Profile, NewConnsPerSec: ratePtr(r.VS, v.Name)}
		if v.Type == "http" {
			vv.NewConnsPerSec = nil // the datapath counts l4 virtual servers only
		}
		if pool := pools[v.Pool]; pool != nil {
			vv.Algorithm = pool.Algorithm
			for i := range pool.Members {
				m := &pool.Members[i]
				vv.Members++
				if m.InService() {
					vv.InService++
				}
				vv.MemberRows = append(vv.MemberRows, memberOf(pool.Name, m, r))
			}
		}
		p.VirtualServers = append(p.VirtualServers, vv)
	}
	for _, t := range st.Tables {
		tv := tableView{ID: t.ID, Profile: t.Profile, Owner: t.VirtualServer, Entries: t.Entries, Max: t.MaxEntries,
			Timeout: formatDuration(time.Duration(t.Timeout) * time.Second), WhenFull: "purge oldest", FullClass: "ok"}
		if t.Shared {
			tv.Owner = "shared"
		}
		if !t.PurgeWhenFull {
			tv.WhenFull = "reject new clients"
		}
		if t.MaxEntries > 0 {
			tv.FillPct = 100 * float64(t.Entries) / float64(t.MaxEntries)
			tv.High, tv.Low = t.MaxEntries*9/10, t.MaxEntries*7/10
		}
		switch {
		case tv.FillPct >= 90:
			tv.FullClass = "down"
		case tv.FillPct >= 70:
			tv.FullClass = "drain"
		}
		if v, ok := r.Tables[t.ID]; ok {
			tv.Inserts, tv.Expiries, tv.Evictions, tv.Rejects = &v[0], &v[1], &v[2], &v[3]
		}
		p.Tables = append(p.Tables, tv)
	}
	for _, m := range st.Mirroring {
		pv := peerView{Address: m.Address, State: m.State, LastError: m.LastError, Sent: m.Sent, Received: m.Received,
			Dropped: m.Dropped, Queue: m.QueueLen, Lag: formatDuration(time.Duration(m.LagSeconds * float64(time.Second))), Class: "down"}
		if !m.Since.IsZero() {
			pv.Since = formatDuration(now.Sub(m.Since))
		}
		switch m.State {
		case "up":
			pv.Class = "ok"
		case "syncing", "connecting", "authenticating":
			pv.Class = "drain"
		}
		p.Peers = append(p.Peers, pv)
	}
	if st.BGP != nil {
		p.BGP = bgpOf(st.BGP, st.Cluster, now)
	}
	return p
}

// reasonText says why a VIP is or is not announced, for the page; the
// reason codes are bgp's.
var reasonText = map[bgp.Reason]string{
	bgp.ReasonAnnounced:     "servable: a member in service, the datapath forwarding, the HA sync done",
	bgp.ReasonStopping:      "shutting down: withdrawn while open connections finish (shutdown grace)",
	bgp.ReasonDraining:      "draining: limpet drain (limpet drain --cancel announces again)",
	bgp.ReasonNotForwarding: "the datapath does not forward",
	bgp.ReasonNoMember:      "no healthy member in service",
	bgp.ReasonWaitingSync:   "waiting for the HA bulk sync",
	bgp.ReasonDamping:       "damping: servable again, held back until it has been for a whole damping interval",
}

func bgpOf(b *bgp.Status, cl *admin.Cluster, now time.Time) *bgpView {
	bv := &bgpView{ASN: b.ASN, RouterID: b.RouterID, ListenPort: b.ListenPort, Draining: b.Draining,
		Damping: formatDuration(time.Duration(b.DampingSeconds * float64(time.Second)))}
	if cl != nil && cl.Peers > 0 {
		bv.Sync, bv.SyncClass = "finished", "ok"
		if !cl.Synced {
			bv.Sync, bv.SyncClass = "not finished", "drain"
			if cl.SyncDetail != "" {
				bv.Sync += ": " + cl.SyncDetail
			}
		}
	}
	for _, s := range b.Sessions {
		sv := sessionView{Neighbor: s.Neighbor, Description: s.Description, PeerRouterID: s.PeerRouterID, PeerASN: s.PeerASN,
			LocalASN: s.LocalASN, State: s.State, Hold: s.HoldTimeSeconds, Families: strings.Join(s.Families, ", "), MD5: s.Password,
			Received: s.PrefixesReceived, Sent: s.PrefixesSent, Flaps: s.Flaps, LastError: s.LastError, Class: "down"}
		switch {
		case s.Established():
			sv.Since = formatDuration(time.Duration(s.UptimeSeconds * float64(time.Second)))
			sv.Class = "ok"
		case !s.Since.IsZero():
			sv.Since = formatDuration(now.Sub(s.Since))
		}
		if sv.Class != "ok" && (s.State == "opensent" || s.State == "openconfirm") {
			sv.Class = "drain"
		}
		bv.Sessions = append(bv.Sessions, sv)
	}
	for _, a := range b.Announcements {
		av := announcementView{Prefix: a.Prefix, VirtualServers: strings.Join(a.VirtualServers, ", "), Announced: a.Announced,
			Reason: string(a.Reason), Why: reasonText[a.Reason], Detail: a.Detail, Changes: a.Changes,
			Communities: strings.Join(a.Communities, " "), LocalPref: a.LocalPreference, Class: "down"}
		if av.Why == "" {
			av.Why = string(a.Reason)
		}
		if !a.Since.IsZero() {
			av.Since = formatDuration(now.Sub(a.Since))
		}
		switch {
		case a.Announced:
			av.Class = "ok"
		case a.Reason == bgp.ReasonDamping || a.Reason == bgp.ReasonWaitingSync || a.Reason == bgp.ReasonDraining || a.Reason == bgp.ReasonStopping:
			av.Class = "drain"
		}
		if a.AnnounceAt != nil {
			av.AnnounceIn = formatDuration(a.AnnounceAt.Sub(now))
		}
		bv.Announcements = append(bv.Announcements, av)
	}
	return bv
}

func memberOf(pool string, m *admin.Member, r Rates) memberView {
	mv := memberView{Pool: pool, Name: m.Name, Endpoint: endpoint(m.Address, m.Port), State: m.State, Health: m.Health,
		HealthDetail: m.HealthDetail, Weight: m.Weight, Active: m.ActiveConnections, Max: m.MaxConnections,
		NewConnsPerSec: ratePtr(r.Members, pool+"/"+m.Name), Class: "ok"}
	if m.AdminDown {
		mv.State = "disabled (limpet member disable)"
	}
	if !m.HealthSince.IsZero() {
		mv.HealthSince = formatDuration(time.Since(m.HealthSince))
	}
	switch {
	case m.AdminDown || m.State == "disabled" || m.Health == admin.HealthDown:
		mv.Class = "down"
	case m.State == "graceful_disabled" || (m.MaxConnections > 0 && m.ActiveConnections >= uint64(m.MaxConnections)):
		mv.Class = "drain"
	}
	return mv
}

func formatFloat(f float64, prec int) string { return strconv.FormatFloat(f, 'f', prec, 64) }

// formatRate shows a per-second figure; nil is "no figure yet".
func formatRate(f *float64) string {
	switch {
	case f == nil:
		return "–"
	case *f == 0:
		return "0"
	case *f < 10:
		return formatFloat(*f, 1)
	}
	return formatFloat(*f, 0)
}

func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%.0fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
