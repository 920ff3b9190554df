package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Reason says why a VIP is or is not announced.
type Reason string

// Reasons, in the order they are checked when a VIP is not announced.
const (
	ReasonAnnounced     Reason = "announced"
	ReasonStopping      Reason = "shutting_down"           // SIGTERM: withdrawn for the shutdown grace
	ReasonDraining      Reason = "draining"                // limpet drain
	ReasonNotForwarding Reason = "datapath_not_forwarding" // an interface is down or lost the XDP program
	ReasonNoMember      Reason = "no_member_in_service"    // no virtual server of the address has a member in service
	ReasonWaitingSync   Reason = "waiting_for_ha_sync"     // the node's HA bulk sync has not finished
	ReasonDamping       Reason = "damping"                 // servable again, but not yet for a whole damping interval
)

// Input is the node's state, as the daemon sees it on each evaluation.
type Input struct {
	Now time.Time
	// Forwarding: the datapath is attached to every interface and they
	// are up; ForwardingDetail says what is wrong otherwise.
	Forwarding       bool
	ForwardingDetail string
	// Synced: the HA bulk sync has finished (or no mirroring is set up).
	Synced     bool
	SyncDetail string
	Draining   bool
	Stopping   bool
	// InService counts each l4 virtual server's members in service.
	InService map[string]int
}

// Announcer decides which VIPs to announce. It is not safe for concurrent
// use: the daemon's main loop owns it (Status copies).
type Announcer struct {
	damping time.Duration
	vips    []VIP
	state   map[netip.Prefix]*vipState
}

type vipState struct {
	announced   bool
	since       time.Time // of the last change of announced
	unservable  time.Time // last time the VIP could not be served; zero: never
	reason      Reason
	detail      string
	changes     uint64
	announceAt  time.Time // while damping: when it will be announced
	lastInput   time.Time
	everChecked bool
}

// NewAnnouncer returns an announcer of vips with a damping interval.
func NewAnnouncer(vips []VIP, damping time.Duration) *Announcer {
	a := &Announcer{damping: damping, state: map[netip.Prefix]*vipState{}}
	a.SetVIPs(vips)
	return a
}

// SetVIPs replaces the VIPs (a reload). VIPs that stay keep their state;
// new ones start withdrawn; removed ones are no longer announced.
func (a *Announcer) SetVIPs(vips []VIP) {
	a.vips = slices.Clone(vips)
	keep := map[netip.Prefix]bool{}
	for _, v := range vips {
		keep[v.Prefix] = true
		if a.state[v.Prefix] == nil {
			a.state[v.Prefix] = &vipState{reason: ReasonWaitingSync}
		}
	}
	for p := range a.state {
		if !keep[p] {
			delete(a.state, p)
		}
	}
}

// SetDamping changes the damping interval.
func (a *Announcer) SetDamping(d time.Duration) { a.damping = d }

// Evaluate applies the node's state and returns the routes to announce.
//
// A VIP is servable while the datapath forwards and at least one of its
// virtual servers has a member in service. It is announced while it is
// servable, the HA bulk sync has finished and the node neither drains nor
// stops, and, if it was ever unservable, only once it has been servable
// again for a whole damping interval. Withdrawals happen at once.
func (a *Announcer) Evaluate(in Input) []Route {
	var out []Route
	for _, v := range a.vips {
		st := a.state[v.Prefix]
		servable := in.Forwarding && a.anyInService(v, in.InService)
		if !servable {
			st.unservable = in.Now
		}
		reason, detail := ReasonAnnounced, ""
		switch {
		case in.Stopping:
			reason = ReasonStopping
		case in.Draining:
			reason = ReasonDraining
		case !in.Forwarding:
			reason, detail = ReasonNotForwarding, in.ForwardingDetail
		case !servable:
			reason, detail = ReasonNoMember, "no member in service in "+strings.Join(v.VirtualServers, ", ")
		case !in.Synced:
			reason, detail = ReasonWaitingSync, in.SyncDetail
		case !st.announced && !st.unservable.IsZero() && in.Now.Sub(st.unservable) < a.damping:
			reason = ReasonDamping
			at := st.unservable.Add(a.damping)
			st.announceAt = at
			detail = fmt.Sprintf("servable again; announced at %s unless it fails before (damping interval %s)", at.UTC().Format(time.RFC3339Nano), a.damping)
		}
		if reason != ReasonDamping {
			st.announceAt = time.Time{}
		}
		announce := reason == ReasonAnnounced
		if announce != st.announced || !st.everChecked {
			if st.everChecked {
				st.changes++
			}
			st.announced, st.since, st.everChecked = announce, in.Now, true
		}
		st.reason, st.detail, st.lastInput = reason, detail, in.Now
		if announce {
			out = append(out, v.Route)
		}
	}
	return out
}

func (a *Announcer) anyInService(v VIP, in map[string]int) bool {
	for _, vs := range v.VirtualServers {
		if in[vs] > 0 {
			return true
		}
	}
	return false
}

// Announcements describes every VIP, in VIP order.
func (a *Announcer) Announcements() []Announcement {
	out := make([]Announcement, 0, len(a.vips))
	for _, v := range a.vips {
		st := a.state[v.Prefix]
		an := Announcement{Prefix: v.Prefix.String(), VirtualServers: slices.Clone(v.VirtualServers), Announced: st.announced,
			Reason: st.reason, Detail: st.detail, Since: st.since, Changes: st.changes, LocalPreference: v.LocalPref}
		for _, c := range v.Communities {
			an.Communities = append(an.Communities, c.String())
		}
		for _, c := range v.LargeCommunities {
			an.Communities = append(an.Communities, c.String())
		}
		if !st.announceAt.IsZero() {
			at := st.announceAt
			an.AnnounceAt = &at
		}
		out = append(out, an)
	}
	return out
}
