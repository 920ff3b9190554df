package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Speaker is the node's BGP speaker: GoBGP in-process.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	mu        sync.Mutex
	announced map[netip.Prefix]Route // what GoBGP holds
	sessions  map[netip.Addr]*session
	closed    bool
	cancel    context.CancelFunc
}

// session is what the speaker remembers of a neighbour between polls.
type session struct {
	state     string
	since     time.Time
	lastError string
	flaps     uint64
	// notifications received so far (GoBGP does not log one that
	// arrives while the session opens)
	notifications uint64
}

// New checks cfg and returns a speaker; Start starts it.
func New(cfg Config, log *slog.Logger) (*Speaker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ASN == 0 || !cfg.RouterID.Is4() {
		return nil, errors.New("bgp: an ASN and an IPv4 router id are required")
	}
	if len(cfg.Neighbors) == 0 {
		return nil, errors.New("bgp: no neighbors")
	}
	s := &Speaker{cfg: cfg, log: log.With("component", "bgp"), announced: map[netip.Prefix]Route{}, sessions: map[netip.Addr]*session{}}
	now := time.Now()
	for _, n := range cfg.Neighbors {
		if !n.Address.IsValid() || n.PeerASN == 0 || len(n.Families) == 0 {
			return nil, fmt.Errorf("bgp: neighbor %v: an address, a peer ASN and a family are required", n.Address)
		}
		s.sessions[n.Address] = &session{state: "idle", since: now}
	}
	return s, nil
}

// Start runs the BGP server and adds the neighbours. A port that cannot be
// bound, or a neighbour GoBGP refuses, is an error.
func (s *Speaker) Start(ctx context.Context) error {
	s.srv = server.NewBgpServer(server.LoggerOption(&logAdapter{s: s}))
	go s.srv.Serve()
	port := int32(s.cfg.ListenPort)
	if port == 0 {
		port = -1 // GoBGP: do not listen
	}
	g := &api.Global{Asn: s.cfg.ASN, RouterId: s.cfg.RouterID.String(), ListenPort: port}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: start (listen port %d): %w", s.cfg.ListenPort, err)
	}
	for _, n := range s.cfg.Neighbors {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerOf(n)}); err != nil {
			s.srv.Stop()
			return fmt.Errorf("bgp: neighbor %s: %w", n.Address, err)
		}
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	err := s.srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		if pe := r.GetPeer(); pe != nil && pe.Type == api.WatchEventResponse_PeerEvent_STATE && pe.Peer != nil && pe.Peer.State != nil {
			s.peerEvent(pe.Peer)
		}
	})
	if err != nil {
		cancel()
		s.srv.Stop()
		return fmt.Errorf("bgp: watch: %w", err)
	}
	s.log.Info("bgp: speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID.String(), "listen_port", s.cfg.ListenPort,
		"neighbors", len(s.cfg.Neighbors))
	return nil
}

func peerOf(n Neighbor) *api.Peer {
	secs := func(d time.Duration) uint64 { return uint64((d + time.Second/2) / time.Second) }
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.PeerASN, AuthPassword: n.Password, Description: n.Description},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: secs(n.HoldTime), KeepaliveInterval: secs(n.Keepalive), ConnectRetry: secs(n.ConnectRetry),
			// Announcements are batched by the Announcer already.
			MinimumAdvertisementInterval: 0,
			IdleHoldTimeAfterReset:       secs(n.ConnectRetry),
		}},
		Transport: &api.Transport{PassiveMode: n.Passive, RemotePort: uint32(n.Port)},
	}
	if n.MultihopTTL > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(n.MultihopTTL)}
	}
	for _, f := range n.Families {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true}})
	}
	return p
}

func apiFamily(f Family) *api.Family {
	if f == IPv6Unicast {
		return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
}

// peerEvent logs a session's state changes.
func (s *Speaker) peerEvent(p *api.Peer) {
	a, err := netip.ParseAddr(p.State.NeighborAddress)
	if err != nil {
		return
	}
	state := stateName(p.State.SessionState)
	s.mu.Lock()
	ss := s.sessions[a]
	if ss == nil || ss.state == state {
		s.mu.Unlock()
		return
	}
	was := ss.state
	ss.state, ss.since = state, time.Now()
	if was == "established" {
		ss.flaps++
	}
	lastErr := ss.lastError
	if state == "established" {
		ss.lastError = ""
	}
	s.mu.Unlock()
	switch {
	case state == "established":
		s.log.Info("bgp: session established", "neighbor", a.String(), "peer_asn", p.State.PeerAsn)
	case was == "established":
		s.log.Warn("bgp: session down", "neighbor", a.String(), "state", state, "reason", lastErr)
	default:
		s.log.Debug("bgp: session state", "neighbor", a.String(), "state", state)
	}
}

// stateName is the session state as limpet reports it: gobgp's own name
// for it (RFC 4271's, "OPENSENT"), lower-cased; "unknown" for a value
// gobgp does not name.
func stateName(st api.PeerState_SessionState) string {
	if name, ok := api.PeerState_SessionState_name[int32(st)]; ok {
		return strings.ToLower(name)
	}
	return "unknown"
}

// Announce makes the announced set exactly routes: new ones are added,
// changed ones replaced, missing ones withdrawn. It returns the first
// error; the routes it could not change are retried on the next call.
func (s *Speaker) Announce(ctx context.Context, routes []Route) error {
	want := map[netip.Prefix]Route{}
	for _, r := range routes {
		want[r.Prefix] = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp: speaker stopped")
	}
	var errs []error
	for p, old := range s.announced {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{Family: apiFamily(FamilyOf(p.Addr())), Path: s.path(old)}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.announced, p)
		s.log.Info("bgp: withdrawn", "prefix", p.String())
	}
	for _, p := range sortedPrefixes(want) {
		r := want[p]
		if old, ok := s.announced[p]; ok && old.equal(r) {
			continue
		}
		// AddPath replaces a path of the same prefix from the same source.
		if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{Path: s.path(r)}); err != nil {
			errs = append(errs, fmt.Errorf("announce %s: %w", p, err))
			continue
		}
		s.announced[p] = r
		s.log.Info("bgp: announced", "prefix", p.String(), "communities", communityList(r))
	}
	return errors.Join(errs...)
}

func sortedPrefixes(m map[netip.Prefix]Route) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

func communityList(r Route) string {
	var cs []string
	for _, c := range r.Communities {
		cs = append(cs, c.String())
	}
	for _, c := range r.LargeCommunities {
		cs = append(cs, c.String())
	}
	return strings.Join(cs, " ")
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // only for messages of this file, which always marshal
	}
	return a
}

// path is the GoBGP path of a route.
func (s *Speaker) path(r Route) *api.Path {
	fam := FamilyOf(r.Prefix.Addr())
	nlri := mustAny(&api.IPAddressPrefix{Prefix: r.Prefix.Addr().String(), PrefixLen: uint32(r.Prefix.Bits())})
	attrs := []*anypb.Any{mustAny(&api.OriginAttribute{Origin: 0})} // IGP
	if fam == IPv4Unicast {
		nh := "0.0.0.0" // GoBGP puts the session's local address
		if s.cfg.NextHop4.IsValid() {
			nh = s.cfg.NextHop4.String()
		}
		attrs = append(attrs, mustAny(&api.NextHopAttribute{NextHop: nh}))
	} else {
		nh := "::"
		if s.cfg.NextHop6.IsValid() {
			nh = s.cfg.NextHop6.String()
		}
		attrs = append(attrs, mustAny(&api.MpReachNLRIAttribute{Family: apiFamily(fam), NextHops: []string{nh}, Nlris: []*anypb.Any{nlri}}))
	}
	if len(r.Communities) > 0 {
		cs := make([]uint32, len(r.Communities))
		for i, c := range r.Communities {
			cs[i] = uint32(c)
		}
		attrs = append(attrs, mustAny(&api.CommunitiesAttribute{Communities: cs}))
	}
	if len(r.LargeCommunities) > 0 {
		var ls []*api.LargeCommunity
		for _, c := range r.LargeCommunities {
			ls = append(ls, &api.LargeCommunity{GlobalAdmin: c.Global, LocalData1: c.Local1, LocalData2: c.Local2})
		}
		attrs = append(attrs, mustAny(&api.LargeCommunitiesAttribute{Communities: ls}))
	}
	if r.LocalPref > 0 {
		attrs = append(attrs, mustAny(&api.LocalPrefAttribute{LocalPref: r.LocalPref}))
	}
	return &api.Path{Family: apiFamily(fam), Nlri: nlri, Pattrs: attrs}
}

// Sessions describes every neighbour's session, in config order.
func (s *Speaker) Sessions(ctx context.Context) []Session {
	byAddr := map[string]*api.Peer{}
	if s.srv != nil {
		_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if p.Conf != nil {
				byAddr[p.Conf.NeighborAddress] = p
			}
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := make([]Session, 0, len(s.cfg.Neighbors))
	for _, n := range s.cfg.Neighbors {
		ss := s.sessions[n.Address]
		st := Session{Neighbor: n.Address.String(), PeerASN: n.PeerASN, LocalASN: s.cfg.ASN, Description: n.Description,
			State: ss.state, Since: ss.since, LastError: ss.lastError, Flaps: ss.flaps, Password: n.Password != ""}
		for _, f := range n.Families {
			st.Families = append(st.Families, f.String())
		}
		if p := byAddr[n.Address.String()]; p != nil {
			if p.State != nil {
				st.State = stateName(p.State.SessionState)
				if m := p.State.Messages; m != nil && m.Received != nil && m.Received.Notification > ss.notifications {
					ss.notifications = m.Received.Notification
					if st.State != "established" && !strings.HasPrefix(ss.lastError, "the peer refused") {
						ss.lastError = fmt.Sprintf("the peer refused this node while the session opened (it sent a NOTIFICATION): "+
							"check that it expects AS %d and router id %s from this address, and the password", s.cfg.ASN, s.cfg.RouterID)
						st.LastError = ss.lastError
						s.log.Warn("bgp: session with neighbor failed", "neighbor", n.Address.String(), "reason", ss.lastError)
					}
				}
				if p.State.RouterId != "" && st.State == "established" {
					st.PeerRouterID = p.State.RouterId
				}
			}
			if p.Timers != nil && p.Timers.State != nil {
				st.HoldTimeSeconds = int(p.Timers.State.NegotiatedHoldTime)
				if st.State == "established" && p.Timers.State.Uptime != nil {
					st.Since = p.Timers.State.Uptime.AsTime()
				}
			}
			for _, af := range p.AfiSafis {
				if af.State != nil {
					st.PrefixesSent += af.State.Advertised
					st.PrefixesReceived += af.State.Received
				}
			}
		}
		if st.State == "established" {
			st.UptimeSeconds = now.Sub(st.Since).Seconds()
		}
		out = append(out, st)
	}
	return out
}

// Announced lists the prefixes GoBGP holds, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedPrefixes(s.announced)
}

// Close withdraws everything (when withdraw is set, as a graceful stop
// does) and stops the server; sessions end with a Cease notification.
func (s *Speaker) Close(ctx context.Context, withdraw bool) {
	if withdraw {
		_ = s.Announce(ctx, nil)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if s.srv != nil {
		s.srv.Stop()
	}
	s.log.Info("bgp: speaker stopped")
}

// recordError keeps the latest error GoBGP logged about a neighbour, for
// Sessions, and returns false when it was already the latest.
func (s *Speaker) recordError(neighbor, text string) bool {
	a, err := netip.ParseAddr(neighbor)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[a]
	if ss == nil || ss.lastError == text {
		return false
	}
	ss.lastError = text
	return true
}

// logAdapter turns GoBGP's log calls into the daemon's slog records, and
// remembers what went wrong with each neighbour.
type logAdapter struct {
	s     *Speaker
	level gobgplog.LogLevel
}

func (l *logAdapter) fields(msg string, f gobgplog.Fields) (string, []any) {
	var neighbor string
	args := []any{}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := f[k]
		switch k {
		case "Key":
			neighbor = fmt.Sprint(v)
			args = append(args, "neighbor", neighbor)
		case "Topic", gobgplog.FieldFacility:
		default:
			args = append(args, strings.ToLower(k), fmt.Sprint(v))
		}
	}
	return neighbor, args
}

// peerProblem says in words what a GoBGP warning means for the session.
func peerProblem(msg string, f gobgplog.Fields) string {
	data := fmt.Sprint(f["Data"])
	switch msg {
	case "sent notification":
		return "refused the peer: " + data
	case "received notification":
		return fmt.Sprintf("the peer refused this node: notification code %v subcode %v %s", f["Code"], f["Subcode"], notificationText(f))
	case "hold timer expired":
		return "hold timer expired: nothing heard from the peer"
	case "failed to send":
		return "send failed: " + fmt.Sprint(f["Error"])
	}
	return ""
}

func notificationText(f gobgplog.Fields) string {
	code, _ := f["Code"].(uint8)
	sub, _ := f["Subcode"].(uint8)
	switch {
	case code == 2 && sub == 2:
		return "(bad peer AS: the router expects another ASN from this node)"
	case code == 2 && sub == 3:
		return "(bad BGP identifier)"
	case code == 2:
		return "(OPEN message error)"
	case code == 4:
		return "(hold timer expired)"
	case code == 6:
		return "(cease)"
	}
	return ""
}

func (l *logAdapter) emit(level slog.Level, msg string, f gobgplog.Fields) {
	neighbor, args := l.fields(msg, f)
	if neighbor != "" && level >= slog.LevelWarn {
		if p := peerProblem(msg, f); p != "" {
			if l.s.recordError(neighbor, p) {
				// Once per distinct problem, in words, at warning level.
				l.s.log.Warn("bgp: session with neighbor failed", "neighbor", neighbor, "reason", p)
			}
			level = slog.LevelDebug
		}
	}
	l.s.log.Log(context.Background(), level, "bgp: gobgp: "+msg, args...)
}

func (l *logAdapter) Panic(msg string, f gobgplog.Fields) {
	l.emit(slog.LevelError, msg, f)
	panic(msg)
}
func (l *logAdapter) Fatal(msg string, f gobgplog.Fields) {
	// GoBGP calls Fatal for errors it cannot go on from in a daemon; in a
	// library they are logged, and the session concerned fails.
	l.emit(slog.LevelError, msg, f)
}
func (l *logAdapter) Error(msg string, f gobgplog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logAdapter) Warn(msg string, f gobgplog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *logAdapter) Info(msg string, f gobgplog.Fields)  { l.emit(slog.LevelDebug, msg, f) }
func (l *logAdapter) Debug(msg string, f gobgplog.Fields) {
	if l.level >= gobgplog.DebugLevel {
		l.emit(slog.LevelDebug, msg, f)
	}
}
func (l *logAdapter) SetLevel(level gobgplog.LogLevel) { l.level = level }
func (l *logAdapter) GetLevel() gobgplog.LogLevel {
	if l.level == 0 {
		return gobgplog.InfoLevel
	}
	return l.level
}

// NoteProblem records a problem with a neighbour's session that the daemon
// found (a TCP MD5 failure, which GoBGP never sees), and logs it once.
func (s *Speaker) NoteProblem(neighbor, text string) {
	if s.recordError(neighbor, text) {
		s.log.Warn("bgp: session with neighbor failed", "neighbor", neighbor, "reason", text)
	}
}
