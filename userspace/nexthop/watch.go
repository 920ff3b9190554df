package nexthop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/loader"
)

// Cache is the datapath's next-hop cache (loader.Datapath).
type Cache interface {
	PublishNextHops(hops map[loader.MemberID]loader.NextHop, lease time.Duration) (uint32, error)
	RenewNextHops(lease time.Duration) error
	DropNextHops() error
}

// MACFollower is a Cache that also holds its interfaces' own MACs
// (loader.Datapath): the watcher has it reread them on a link event and
// every resync, so that a MAC change reaches the datapath at once.
type MACFollower interface {
	SyncInterfaceMACs() error
}

// Options tune a Watcher; the zero value is the daemon's.
type Options struct {
	// Lease is how long the datapath trusts a publish without a renewal:
	// a watcher that dies leaves the FIB in charge after it. Default 3s.
	Lease time.Duration
	// Resync is the interval of full resolutions (and lease renewals),
	// which catch what sends no event: a sysctl, a learnt path MTU.
	// Default Lease / 3.
	Resync time.Duration
	// Settle gathers a burst of events into one resolution. Default 2ms.
	Settle time.Duration
	Logger *slog.Logger
}

// Stats describe the watcher's work.
type Stats struct {
	Generation  uint32 // the last published
	Refreshes   uint64 // generations published
	Events      uint64 // relevant netlink events
	Resolved    int
	Unresolved  map[loader.MemberID]string
	LastRefresh time.Time // the last publish
	// LastResolve is the last resolution that succeeded, published or
	// only renewing the lease (the hops had not changed).
	LastResolve time.Time
}

// Watcher keeps a Cache in step with the kernel's routes and neighbours.
type Watcher struct {
	cache Cache
	opts  Options
	log   *slog.Logger
	ns    netns.NsHandle // the namespace it was created in

	mu      sync.Mutex
	targets []Target
	stats   Stats
	poke    chan struct{}
	// refreshed is signalled after each publish, for Wait.
	refreshed *sync.Cond
}

// New returns a watcher of the network namespace of the calling thread,
// which it captures now: Run may end up on any thread.
func New(cache Cache, opts Options) (*Watcher, error) {
	if opts.Lease <= 0 {
		opts.Lease = 3 * time.Second
	}
	if opts.Resync <= 0 {
		opts.Resync = opts.Lease / 3
	}
	if opts.Settle <= 0 {
		opts.Settle = 2 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("next hops: this thread's network namespace: %w", err)
	}
	w := &Watcher{cache: cache, opts: opts, log: opts.Logger, ns: ns, poke: make(chan struct{}, 1)}
	w.refreshed = sync.NewCond(&w.mu)
	return w, nil
}

// SetTargets sets the members to resolve; a change is published at once.
func (w *Watcher) SetTargets(ts []Target) {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b Target) int { return int(a.Member) - int(b.Member) })
	w.mu.Lock()
	same := slices.Equal(ts, w.targets)
	w.targets = ts
	w.mu.Unlock()
	if !same {
		w.kick()
	}
}

func (w *Watcher) kick() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Stats returns a copy of the watcher's statistics.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Unresolved = maps.Clone(s.Unresolved)
	return s
}

// WaitGeneration blocks until a generation after gen is published or ctx
// ends, and returns the last published one.
func (w *Watcher) WaitGeneration(ctx context.Context, gen uint32) uint32 {
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.refreshed.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.stats.Generation == gen && ctx.Err() == nil {
		w.refreshed.Wait()
	}
	return w.stats.Generation
}

// Run follows the kernel until ctx ends, then drops the cache so that the
// FIB decides again (nobody follows the kernel any more). It returns an
// error only if it cannot start.
func (w *Watcher) Run(ctx context.Context) error {
	// Never unlocked: the thread joins the watched namespace, and a
	// locked thread ends with its goroutine instead of serving others.
	runtime.LockOSThread()
	if err := netns.Set(w.ns); err != nil {
		return fmt.Errorf("next hops: join the network namespace: %w", err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("next hops: netlink: %w", err)
	}
	defer h.Close()
	defer func() {
		if err := w.cache.DropNextHops(); err != nil {
			w.log.Error("next hops: drop the cache", "error", err)
		}
	}()

	var sub *subscription
	defer func() { sub.close() }()
	resync := time.NewTicker(w.opts.Resync)
	defer resync.Stop()
	settle := time.NewTimer(0) // the first resolution, at once
	pending := true
	var published map[loader.MemberID]loader.NextHop
	// inUse: what the published hops were read from. A change to one of
	// them turns the cache off at once, before the settle: between the
	// event and the next publish the FIB decides, never a stale MAC.
	var inUse usage
	resubscribe := func() {
		sub.close()
		if sub, err = subscribe(w.ns); err != nil {
			w.log.Error("next hops: netlink subscription failed; resolving on the resync interval only", "error", err)
		}
	}
	resubscribe()
	for {
		var ev subEvents
		if sub != nil {
			ev = sub.events
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-ev.errs:
			// Events were lost (a full socket buffer, ENOBUFS): nothing
			// cached can be trusted. Resubscribe and resolve afresh.
			w.log.Warn("next hops: netlink events lost; resolving afresh", "error", err)
			resubscribe()
			pending = w.armed(settle, pending)
		case u, ok := <-ev.neigh:
			if ok && !sub.neighChanged(u) {
				continue
			}
			if !ok {
				resubscribe()
			} else if ip, valid := netipAddr(u.IP); valid && inUse.neighs[neighKey{u.LinkIndex, ip}] {
				inUse = w.invalidate(inUse)
			}
			pending = w.event(settle, pending)
		case _, ok := <-ev.route:
			if !ok {
				resubscribe()
			}
			// Any route may be the one a member's or a client's packets
			// take: the FIB decides until the next publish.
			inUse = w.invalidate(inUse)
			pending = w.event(settle, pending)
		case u, ok := <-ev.link:
			if ok && !sub.linkChanged(u) {
				continue
			}
			if !ok {
				resubscribe()
			} else {
				w.followMACs()
				if inUse.links[u.Attrs().Index] {
					inUse = w.invalidate(inUse)
				}
			}
			pending = w.event(settle, pending)
		case <-w.poke:
			pending = w.armed(settle, pending)
		case <-settle.C:
			pending = false
			published, inUse = w.refresh(h, nil, inUse, true)
		case <-resync.C:
			if sub == nil {
				resubscribe()
			}
			w.followMACs()
			if pending {
				continue
			}
			// Without an event, publish only a change (a learnt path
			// MTU, a sysctl); otherwise renew the lease.
			published, inUse = w.refresh(h, published, inUse, false)
		}
	}
}

// followMACs has the cache reread its interfaces' MACs, if it holds any.
func (w *Watcher) followMACs() {
	f, ok := w.cache.(MACFollower)
	if !ok {
		return
	}
	if err := f.SyncInterfaceMACs(); err != nil {
		w.log.Error("interface MACs", "error", err)
	}
}

func (w *Watcher) event(settle *time.Timer, pending bool) bool {
	w.mu.Lock()
	w.stats.Events++
	w.mu.Unlock()
	return w.armed(settle, pending)
}

func (w *Watcher) armed(settle *time.Timer, pending bool) bool {
	if !pending {
		settle.Reset(w.opts.Settle)
	}
	return true
}

// refresh resolves every target and publishes a new generation, unless
// always is off and nothing differs from prev: then it renews the lease.
// It returns what the cache holds.
func (w *Watcher) refresh(h *netlink.Handle, prev map[loader.MemberID]loader.NextHop, prevUse usage, always bool) (map[loader.MemberID]loader.NextHop, usage) {
	w.mu.Lock()
	targets := w.targets
	w.mu.Unlock()
	res, err := Resolve(h, targets)
	if err != nil {
		// Half a picture is no basis for forwarding: the FIB decides
		// until a resolution succeeds.
		w.log.Error("next hops: resolve; the FIB decides meanwhile", "error", err)
		return nil, w.invalidate(prevUse)
	}
	if !always && prev != nil && maps.EqualFunc(prev, res.Hops, sameHop) {
		if err := w.cache.RenewNextHops(w.opts.Lease); err != nil {
			w.log.Error("next hops: renew the lease", "error", err)
			return prev, prevUse
		}
		w.mu.Lock()
		w.stats.LastResolve = time.Now()
		w.mu.Unlock()
		return prev, prevUse
	}
	gen, err := w.cache.PublishNextHops(res.Hops, w.opts.Lease)
	if err != nil {
		w.log.Error("next hops: publish; the FIB decides meanwhile", "error", err)
		return nil, w.invalidate(prevUse)
	}
	use := usage{neighs: res.neighs, links: map[int]bool{}, live: true}
	for _, hop := range res.Hops {
		use.links[hop.Ifindex] = true
	}
	w.mu.Lock()
	changed := !maps.Equal(w.stats.Unresolved, res.Unresolved)
	w.stats.Generation, w.stats.Resolved, w.stats.Unresolved = gen, len(res.Hops), res.Unresolved
	w.stats.Refreshes++
	w.stats.LastRefresh = time.Now()
	w.stats.LastResolve = w.stats.LastRefresh
	w.refreshed.Broadcast()
	w.mu.Unlock()
	if changed {
		w.log.Info("next-hop cache", "generation", gen, "members_cached", len(res.Hops), "members_asking_the_fib", len(res.Unresolved))
		for id, why := range res.Unresolved {
			w.log.Debug("next hops: member not cached; the FIB decides for it", "member", id, "reason", why)
		}
	}
	return res.Hops, use
}

// usage is what published hops depend on.
type usage struct {
	neighs map[neighKey]bool
	links  map[int]bool
	live   bool // something is published
}

// invalidate turns the cache off if it is on, and returns the empty usage.
func (w *Watcher) invalidate(u usage) usage {
	if !u.live {
		return usage{}
	}
	if err := w.cache.DropNextHops(); err != nil {
		w.log.Error("next hops: drop the cache", "error", err)
	}
	return usage{}
}

func sameHop(a, b loader.NextHop) bool {
	return a.Ifindex == b.Ifindex && a.MTU == b.MTU && slices.Equal(a.SrcMAC, b.SrcMAC) && slices.Equal(a.DstMAC, b.DstMAC)
}

// subscription holds the three netlink subscriptions and what they last
// said, to tell a change from the kernel's chatter (a neighbour going from
// REACHABLE to STALE keeps its MAC; a link's statistics change every second).
type subscription struct {
	done   chan struct{}
	events subEvents
	neighs map[neighKey]string
	links  map[int]string
}

type subEvents struct {
	neigh <-chan netlink.NeighUpdate
	route <-chan netlink.RouteUpdate
	link  <-chan netlink.LinkUpdate
	errs  <-chan error
}

func subscribe(ns netns.NsHandle) (*subscription, error) {
	s := &subscription{done: make(chan struct{}), neighs: map[neighKey]string{}, links: map[int]string{}}
	neigh := make(chan netlink.NeighUpdate, 1024)
	route := make(chan netlink.RouteUpdate, 1024)
	link := make(chan netlink.LinkUpdate, 256)
	errs := make(chan error, 3)
	onErr := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	s.events = subEvents{neigh: neigh, route: route, link: link, errs: errs}
	const buf = 1 << 20
	err := errors.Join(
		netlink.NeighSubscribeWithOptions(neigh, s.done, netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: buf}),
		netlink.RouteSubscribeWithOptions(route, s.done, netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: buf}),
		netlink.LinkSubscribeWithOptions(link, s.done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: buf}),
	)
	if err != nil {
		close(s.done)
		return nil, err
	}
	return s, nil
}

func (s *subscription) close() {
	if s != nil {
		close(s.done)
	}
}

// neighChanged records an IPv4 or IPv6 neighbour's MAC and usability and
// reports whether either changed.
func (s *subscription) neighChanged(u netlink.NeighUpdate) bool {
	if u.Family != unix.AF_INET && u.Family != unix.AF_INET6 {
		return false // bridge FDB entries come on the same socket
	}
	ip, ok := netipAddr(u.IP)
	if !ok {
		return false
	}
	k := neighKey{u.LinkIndex, ip}
	state := ""
	if u.Type == unix.RTM_NEWNEIGH && u.State&nudValid != 0 {
		state = u.HardwareAddr.String()
	}
	old, seen := s.neighs[k]
	s.neighs[k] = state
	return !seen || old != state
}

// linkChanged reports whether a link's MTU, MAC, state or master changed.
func (s *subscription) linkChanged(u netlink.LinkUpdate) bool {
	a := u.Attrs()
	state := fmt.Sprintf("%d %s %v %d %d", a.MTU, a.HardwareAddr, a.Flags&net.FlagUp != 0, a.MasterIndex, u.Header.Type)
	if u.Header.Type == unix.RTM_DELLINK {
		state = "gone"
	}
	old, seen := s.links[a.Index]
	s.links[a.Index] = state
	return !seen || old != state
}
