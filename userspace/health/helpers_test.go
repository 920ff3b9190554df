package health

import (
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/ids"
)

// event is one report the recorder heard.
type event struct {
	id     ids.MemberRef
	up     bool
	reason string
	at     time.Time
}

// recorder is a Sink that keeps every report.
type recorder struct {
	mu     sync.Mutex
	events []event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) SetMemberHealth(id ids.MemberRef, up bool, reason string) {
	r.mu.Lock()
	r.events = append(r.events, event{id, up, reason, time.Now()})
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// wait returns the first event at index >= from that matches id and up.
func (r *recorder) wait(t *testing.T, from int, id ids.MemberRef, up bool, within time.Duration) event {
	t.Helper()
	deadline := time.After(within)
	for {
		for _, e := range r.all()[from:] {
			if e.id == id && e.up == up {
				return e
			}
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("no %s report for %s within %v; got %+v", upDown(up), id, within, r.all())
		}
	}
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// noLeaks fails the test if goroutines started during it are still running
// once its cleanups ran. Register it first so that it runs last.
func noLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// slack is what timing checks allow for a loaded machine's scheduling
// noise (the race detector, two CPUs, other tests running) beyond what the
// design promises.
const slack = 150 * time.Millisecond

// mon is a monitor with tight timings for tests.
func mon(typ MonitorType, interval time.Duration, rise, fall int) Monitor {
	return Monitor{
		Name:     "m-" + string(typ),
		Type:     typ,
		Interval: interval,
		Timeout:  interval * 8 / 10,
		Rise:     rise,
		Fall:     fall,
		Method:   "GET",
		Path:     "/",
		Codes:    []CodeRange{{Lo: 200, Hi: 299}},
	}
}

func target(pool, name string, ap netip.AddrPort, m Monitor) Target {
	return Target{ID: ids.MemberRef{Pool: pool, Member: name}, Addr: ap.Addr(), Port: ap.Port(), Monitor: m}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func contains(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error holding %q, got nil", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not hold %q", err, want)
	}
}
