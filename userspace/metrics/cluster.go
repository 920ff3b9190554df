package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/limpet-lb/limpet/userspace/bgp"
)

// ClusterSource is a Source that is a node of a cluster: it announces by
// BGP or mirrors to peers. The collector uses it when the Source has it.
type ClusterSource interface {
	Cluster() Cluster
}

// Cluster is a node's cluster view.
type Cluster struct {
	// BGP is nil without a bgp section.
	BGP *bgp.Status
	// SyncKnown: Synced says whether the initial HA bulk sync finished.
	SyncKnown, Synced bool
	Peers             []MirrorPeer
}

// MirrorPeer is one HA mirroring peer.
type MirrorPeer struct {
	Address                 string
	State                   string
	Up                      bool
	Sent, Received, Dropped uint64
	Syncs                   uint64
	QueueLen                int
	Lag, ClockOffset        time.Duration
}

var sessionStates = []string{"idle", "connect", "active", "opensent", "openconfirm", "established"}

type clusterDescs struct {
	sessionUp, sessionState, sessionUptime, prefixesSent, prefixesReceived, sessionFlaps *prometheus.Desc
	announced, announceReason, announceChanges, draining                                 *prometheus.Desc
	synced, peerUp, peerSent, peerReceived, peerDropped, peerQueue, peerLag, peerSyncs   *prometheus.Desc
	peerOffset                                                                           *prometheus.Desc
}

func newClusterDescs() clusterDescs {
	n, p := []string{"neighbor"}, []string{"peer"}
	return clusterDescs{
		sessionUp:        desc("bgp_session_up", "1 if the BGP session with the neighbor is established.", n...),
		sessionState:     desc("bgp_session_state", "1 for the BGP session's state (idle, connect, active, opensent, openconfirm, established), 0 for the others.", "neighbor", "state"),
		sessionUptime:    desc("bgp_session_uptime_seconds", "How long the BGP session has been established (0 if it is not).", n...),
		prefixesSent:     desc("bgp_session_prefixes_sent", "Prefixes this node announces to the neighbor.", n...),
		prefixesReceived: desc("bgp_session_prefixes_received", "Prefixes the neighbor announces to this node.", n...),
		sessionFlaps:     desc("bgp_session_flaps_total", "Times the session went down after being established.", n...),
		announced:        desc("bgp_vip_announced", "1 if the VIP's route is announced.", "prefix"),
		announceReason:   desc("bgp_vip_announcement_reason", "1 for why the VIP is or is not announced (announced, no_member_in_service, datapath_not_forwarding, waiting_for_ha_sync, damping, draining, shutting_down).", "prefix", "reason"),
		announceChanges:  desc("bgp_vip_announcement_changes_total", "Announcements and withdrawals of the VIP since the start.", "prefix"),
		draining:         desc("bgp_draining", "1 while the node drains (limpet drain)."),
		synced:           desc("cluster_initial_sync_done", "1 once the node's initial HA bulk sync has finished (it announces nothing before)."),
		peerUp:           desc("mirror_peer_up", "1 if the HA mirroring peer is up (authenticated, bulk syncs done).", p...),
		peerSent:         desc("mirror_peer_sent_entries_total", "Entries sent to the peer.", p...),
		peerReceived:     desc("mirror_peer_received_entries_total", "Entries received from the peer.", p...),
		peerDropped:      desc("mirror_peer_dropped_entries_total", "Entries not queued for the peer because its queue was full.", p...),
		peerQueue:        desc("mirror_peer_queue_entries", "Entries waiting to be sent to the peer.", p...),
		peerLag:          desc("mirror_peer_lag_seconds", "Age of the oldest entry queued for the peer.", p...),
		peerSyncs:        desc("mirror_peer_bulk_syncs_received_total", "Bulk syncs the peer sent this node.", p...),
		peerOffset:       desc("mirror_peer_clock_offset_seconds", "How far the peer's clock is ahead of this node's (newer-wins compares wall clocks).", p...),
	}
}

func (d clusterDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{d.sessionUp, d.sessionState, d.sessionUptime, d.prefixesSent, d.prefixesReceived, d.sessionFlaps,
		d.announced, d.announceReason, d.announceChanges, d.draining, d.synced, d.peerUp, d.peerSent, d.peerReceived,
		d.peerDropped, d.peerQueue, d.peerLag, d.peerSyncs, d.peerOffset}
}

var announceReasons = []bgp.Reason{bgp.ReasonAnnounced, bgp.ReasonNoMember, bgp.ReasonNotForwarding, bgp.ReasonWaitingSync,
	bgp.ReasonDamping, bgp.ReasonDraining, bgp.ReasonStopping}

func (d clusterDescs) collect(cl Cluster, ch chan<- prometheus.Metric) {
	if cl.SyncKnown {
		ch <- gauge(d.synced, b2f(cl.Synced))
	}
	for _, p := range cl.Peers {
		ch <- gauge(d.peerUp, b2f(p.Up), p.Address)
		ch <- counter(d.peerSent, float64(p.Sent), p.Address)
		ch <- counter(d.peerReceived, float64(p.Received), p.Address)
		ch <- counter(d.peerDropped, float64(p.Dropped), p.Address)
		ch <- counter(d.peerSyncs, float64(p.Syncs), p.Address)
		ch <- gauge(d.peerQueue, float64(p.QueueLen), p.Address)
		ch <- gauge(d.peerLag, p.Lag.Seconds(), p.Address)
		ch <- gauge(d.peerOffset, p.ClockOffset.Seconds(), p.Address)
	}
	b := cl.BGP
	if b == nil {
		return
	}
	ch <- gauge(d.draining, b2f(b.Draining))
	for _, s := range b.Sessions {
		ch <- gauge(d.sessionUp, b2f(s.Established()), s.Neighbor)
		for _, st := range sessionStates {
			ch <- gauge(d.sessionState, b2f(s.State == st), s.Neighbor, st)
		}
		ch <- gauge(d.sessionUptime, s.UptimeSeconds, s.Neighbor)
		ch <- gauge(d.prefixesSent, float64(s.PrefixesSent), s.Neighbor)
		ch <- gauge(d.prefixesReceived, float64(s.PrefixesReceived), s.Neighbor)
		ch <- counter(d.sessionFlaps, float64(s.Flaps), s.Neighbor)
	}
	for _, a := range b.Announcements {
		ch <- gauge(d.announced, b2f(a.Announced), a.Prefix)
		for _, r := range announceReasons {
			ch <- gauge(d.announceReason, b2f(a.Reason == r), a.Prefix, string(r))
		}
		ch <- counter(d.announceChanges, float64(a.Changes), a.Prefix)
	}
}
