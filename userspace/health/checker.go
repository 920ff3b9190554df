package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("health: checker is closed")

// Options tune a Checker. The zero value is usable.
type Options struct {
	// Logger receives one line per verdict change; nil discards them.
	Logger *slog.Logger
	// Now stamps the status (probe times, state changes); nil means time.Now.
	// Probe scheduling always uses the real clock.
	Now func() time.Time
}

// Checker runs the monitors of a set of targets and keeps each member's verdict.
type Checker struct {
	sink Sink
	log  *slog.Logger
	now  func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	loops  sync.WaitGroup // probe loops

	mu      sync.Mutex
	members map[ids.MemberRef]*member
	closed  bool

	// Reports wait in queue for the dispatcher goroutine, so that neither
	// probes nor the L7 proxy's ConnectResult ever block on the sink.
	qmu     sync.Mutex
	qcond   *sync.Cond
	queue   []report
	qclosed bool
	qdone   chan struct{}

	icmp pingers
}

type report struct {
	id     ids.MemberRef
	up     bool
	reason string
}

// member is the state of one target. Guarded by Checker.mu.
type member struct {
	t    Target
	gen  uint64             // bumped when the probe loop restarts; stale results are dropped
	stop context.CancelFunc // the probe loop's; nil for passive-only monitors

	// active verdict
	activeUp   bool
	succ, fail int
	probes     uint64
	lastProbe  time.Time
	lastRTT    time.Duration
	lastErr    string

	// passive verdict
	pFails   int
	pDown    bool
	pUntil   time.Time
	pTimer   *time.Timer
	pGen     uint64
	pLastErr string

	// the verdict last reported (active and passive combined)
	up     bool
	since  time.Time
	reason string
}

// NewChecker returns a Checker that reports changes to sink. It monitors
// nothing until Update gives it targets.
func NewChecker(sink Sink, opts Options) *Checker {
	if sink == nil {
		sink = SinkFunc(func(ids.MemberRef, bool, string) {})
	}
	c := &Checker{
		sink:    sink,
		log:     opts.Logger,
		now:     opts.Now,
		members: map[ids.MemberRef]*member{},
		qdone:   make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.qcond = sync.NewCond(&c.qmu)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.icmp.closed = c.ctx.Done()
	go c.dispatch()
	return c
}

// Update makes targets the monitored set. A member that stays (same
// ids.MemberRef) keeps its verdict and counters, even when its monitor's settings
// change; its consecutive counts restart only when the probed address, port or
// monitor type changes. Removed members stop being probed; one that was down
// is reported up ("no longer monitored"), as an unmonitored member is in
// service. New members start up. Update checks every target first and
// changes nothing when one is wrong.
func (c *Checker) Update(targets []Target) error {
	seen := make(map[ids.MemberRef]bool, len(targets))
	for i := range targets {
		t := &targets[i]
		if seen[t.ID] {
			return fmt.Errorf("health: member %s is listed twice", t.ID)
		}
		seen[t.ID] = true
		if !t.Addr.IsValid() {
			return fmt.Errorf("health: member %s has no address", t.ID)
		}
		if err := t.Monitor.check(); err != nil {
			return fmt.Errorf("health: member %s: monitor %q: %w", t.ID, t.Monitor.Name, err)
		}
		if t.NeedsPort() && t.ProbeAddr().Port() == 0 {
			return fmt.Errorf("health: member %s: monitor %q needs a port", t.ID, t.Monitor.Name)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	now := c.now()
	for id, m := range c.members {
		if seen[id] {
			continue
		}
		c.stopMember(m)
		delete(c.members, id)
		if !m.up {
			c.enqueue(report{id, true, "no longer monitored"})
		}
	}
	for _, t := range targets {
		t.Addr = t.Addr.Unmap()
		m := c.members[t.ID]
		if m == nil {
			m = &member{t: t, activeUp: true, up: true, since: now, reason: "new member: starts up"}
			c.members[t.ID] = m
			c.startLoop(m)
			continue
		}
		if reflect.DeepEqual(m.t, t) {
			continue
		}
		old := m.t
		m.t = t
		if old.ProbeAddr() != t.ProbeAddr() || old.Monitor.Type != t.Monitor.Type {
			m.succ, m.fail = 0, 0
			m.lastErr, m.lastRTT = "", 0
		}
		reason := fmt.Sprintf("monitor %q changed", t.Monitor.Name)
		if !t.Monitor.Active() && !m.activeUp {
			m.activeUp = true // no probes any more: only passive health can hold it down
		}
		if t.Monitor.MaxFails == 0 && (m.pDown || m.pFails > 0) {
			c.clearPassive(m)
		}
		if m.stop != nil {
			m.stop()
			m.stop = nil
		}
		c.startLoop(m)
		c.publish(m, reason)
	}
	return nil
}

// Close stops every probe and timer and waits for them; reports already
// queued are delivered before Close returns. Close is idempotent.
func (c *Checker) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.qdone
		return
	}
	c.closed = true
	for _, m := range c.members {
		c.stopMember(m)
	}
	c.mu.Unlock()

	c.cancel()
	c.loops.Wait()
	c.icmp.close()
	c.qmu.Lock()
	c.qclosed = true
	c.qcond.Broadcast()
	c.qmu.Unlock()
	<-c.qdone
}

func (c *Checker) stopMember(m *member) {
	if m.stop != nil {
		m.stop()
		m.stop = nil
	}
	m.gen++
	if m.pTimer != nil {
		m.pTimer.Stop()
		m.pTimer = nil
	}
	m.pGen++
}

// startLoop starts the probe loop of an active member. c.mu is held.
func (c *Checker) startLoop(m *member) {
	m.gen++
	if !m.t.Monitor.Active() {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	m.stop = cancel
	gen, t := m.gen, m.t
	c.loops.Add(1)
	go c.loop(ctx, m, gen, t)
}

// loop probes t every interval, measured from the start of one probe to the
// start of the next; the first probe goes out at once.
func (c *Checker) loop(ctx context.Context, m *member, gen uint64, t Target) {
	defer c.loops.Done()
	p := c.newProber(&t)
	defer p.close()
	interval := t.Monitor.Interval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, t.Monitor.Timeout)
		err := p.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.record(m, gen, time.Since(start), err)
		timer.Reset(max(0, time.Until(start.Add(interval))))
	}
}

// record counts one probe result and decides the active verdict.
func (c *Checker) record(m *member, gen uint64, rtt time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || m.gen != gen || c.members[m.t.ID] != m {
		return
	}
	mon := &m.t.Monitor
	m.probes++
	m.lastProbe = c.now()
	m.lastRTT = rtt
	var reason string
	if err == nil {
		m.succ++
		m.fail = 0
		m.lastErr = ""
		if !m.activeUp && m.succ >= mon.Rise {
			m.activeUp = true
			reason = fmt.Sprintf("%s monitor %q: %d consecutive successes", mon.Type, mon.Name, m.succ)
		}
		if m.pDown {
			c.clearPassive(m)
			if reason == "" {
				reason = fmt.Sprintf("%s monitor %q succeeded, ending the passive monitor's hold", mon.Type, mon.Name)
			}
		}
	} else {
		m.fail++
		m.succ = 0
		m.lastErr = err.Error()
		if m.activeUp && m.fail >= mon.Fall {
			m.activeUp = false
			reason = fmt.Sprintf("%s monitor %q: %d consecutive failures, last: %s", mon.Type, mon.Name, m.fail, m.lastErr)
		}
	}
	if reason != "" {
		c.publish(m, reason)
	}
}

// publish reports the member's combined verdict if it changed. c.mu is held.
func (c *Checker) publish(m *member, reason string) {
	up := m.activeUp && !m.pDown
	if up == m.up {
		return
	}
	if up && reason == "" {
		reason = "recovered"
	}
	m.up, m.since, m.reason = up, c.now(), reason
	c.enqueue(report{m.t.ID, up, reason})
}

func (c *Checker) enqueue(r report) {
	c.qmu.Lock()
	c.queue = append(c.queue, r)
	c.qcond.Signal()
	c.qmu.Unlock()
}

func (c *Checker) dispatch() {
	defer close(c.qdone)
	for {
		c.qmu.Lock()
		for len(c.queue) == 0 && !c.qclosed {
			c.qcond.Wait()
		}
		batch := c.queue
		c.queue = nil
		done := c.qclosed
		c.qmu.Unlock()
		for _, r := range batch {
			if r.up {
				c.log.Info("member up", "pool", r.id.Pool, "member", r.id.Member, "reason", r.reason)
			} else {
				c.log.Warn("member down", "pool", r.id.Pool, "member", r.id.Member, "reason", r.reason)
			}
			c.sink.SetMemberHealth(r.id, r.up, r.reason)
		}
		if done && len(batch) == 0 {
			return
		}
	}
}

// MemberStatus is one member's health, for limpet status.
type MemberStatus struct {
	Pool    string      `json:"pool"`
	Member  string      `json:"member"`
	Address string      `json:"address"` // the probed address and port
	Monitor string      `json:"monitor"`
	Type    MonitorType `json:"type"`
	// State is "up" or "down": the verdict last reported.
	State  string    `json:"state"`
	Up     bool      `json:"up"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`

	ConsecutiveSuccesses int           `json:"consecutive_successes"`
	ConsecutiveFailures  int           `json:"consecutive_failures"`
	Probes               uint64        `json:"probes"`
	LastProbe            time.Time     `json:"last_probe,omitzero"`
	LastRTT              time.Duration `json:"last_rtt_ns,omitempty"`
	// LastError is the last probe's error; empty when it succeeded.
	LastError string `json:"last_error,omitempty"`
	// ActiveUp is the active monitor's own verdict.
	ActiveUp bool `json:"active_up"`

	PassiveFailures  int       `json:"passive_failures,omitempty"`
	PassiveDown      bool      `json:"passive_down,omitempty"`
	PassiveDownUntil time.Time `json:"passive_down_until,omitzero"`
	PassiveLastError string    `json:"passive_last_error,omitempty"`
}

func (m *member) status() MemberStatus {
	st := MemberStatus{
		Pool:                 m.t.ID.Pool,
		Member:               m.t.ID.Member,
		Address:              m.t.ProbeAddr().String(),
		Monitor:              m.t.Monitor.Name,
		Type:                 m.t.Monitor.Type,
		State:                "down",
		Up:                   m.up,
		Since:                m.since,
		Reason:               m.reason,
		ConsecutiveSuccesses: m.succ,
		ConsecutiveFailures:  m.fail,
		Probes:               m.probes,
		LastProbe:            m.lastProbe,
		LastRTT:              m.lastRTT,
		LastError:            m.lastErr,
		ActiveUp:             m.activeUp,
		PassiveFailures:      m.pFails,
		PassiveDown:          m.pDown,
		PassiveLastError:     m.pLastErr,
	}
	if m.up {
		st.State = "up"
	}
	if m.pDown {
		st.PassiveDownUntil = m.pUntil
	}
	if m.t.Monitor.Type == MonitorICMP || m.t.Monitor.Type == MonitorPassive {
		st.Address = m.t.Addr.String()
	}
	return st
}

// Status lists every monitored member, sorted by pool and member.
func (c *Checker) Status() []MemberStatus {
	c.mu.Lock()
	out := make([]MemberStatus, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m.status())
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Member < out[j].Member
	})
	return out
}

// Member returns one member's status.
func (c *Checker) Member(id ids.MemberRef) (MemberStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[id]
	if m == nil {
		return MemberStatus{}, false
	}
	return m.status(), true
}

// Down lists the members whose verdict is down, so that a caller that
// rebuilt its state (a reload) can apply them again.
func (c *Checker) Down() []ids.MemberRef {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ids.MemberRef
	for id, m := range c.members {
		if !m.up {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Member < out[j].Member
	})
	return out
}

// Passive returns the passive monitor that feeds this checker.
func (c *Checker) Passive() *Passive { return &Passive{c: c} }
