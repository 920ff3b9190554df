package l7health

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7"
	"github.com/limpet-lb/limpet/userspace/health"
	"github.com/limpet-lb/limpet/userspace/ids"
)

func TestSourceWatch(t *testing.T) {
	before := runtime.NumGoroutine()
	s := NewSource()
	a, b := ids.MemberRef{Pool: "p", Member: "a"}, ids.MemberRef{Pool: "p", Member: "b"}
	s.SetMemberHealth(a, false, "down")

	var mu sync.Mutex
	var got []string
	seen := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- s.Watch(ctx, func(id ids.MemberRef, up bool) {
			mu.Lock()
			got = append(got, id.Member+map[bool]string{true: "+", false: "-"}[up])
			mu.Unlock()
			seen <- struct{}{}
		})
	}()
	<-seen // the known state first
	s.SetMemberHealth(b, false, "down")
	s.SetMemberHealth(a, true, "up")
	<-seen
	<-seen
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := "a- b- a+"; strings.Join(got, " ") != want {
		t.Errorf("updates %q, want %q", strings.Join(got, " "), want)
	}
	s.SetMemberHealth(b, true, "no watcher: must not block")
	for i := 0; runtime.NumGoroutine() > before && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before, %d after", before, n)
	}
}

// TestFailureReporter feeds a checker's passive monitor through the
// l7.FailureReporter interface and carries its verdict back to a Source.
func TestFailureReporter(t *testing.T) {
	src := NewSource()
	c := health.NewChecker(src, health.Options{})
	defer c.Close()
	mon := health.Monitor{Name: "pass", Type: health.MonitorPassive, MaxFails: 2, FailTimeout: time.Hour}
	id := ids.MemberRef{Pool: "p", Member: "a"}
	if err := c.Update([]health.Target{{ID: id, Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Monitor: mon}}); err != nil {
		t.Fatal(err)
	}
	var fr l7.FailureReporter = FailureReporter(c.Passive())
	ap := netip.MustParseAddrPort("127.0.0.1:8080")
	fr.ConnectResult(ids.MemberRef{Pool: "p", Member: "a"}, ap, errors.New("refused"))
	fr.ConnectResult(ids.MemberRef{Pool: "p", Member: "a"}, ap, errors.New("refused"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var down bool
	_ = src.Watch(ctx, func(got ids.MemberRef, up bool) {
		if got == (ids.MemberRef{Pool: "p", Member: "a"}) && !up {
			down = true
			cancel()
		}
	})
	if !down {
		t.Fatal("the proxy's failures did not take the member down")
	}
}
