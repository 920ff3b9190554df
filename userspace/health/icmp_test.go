package health

import (
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/ids"
)

func icmpMonitor(timeout time.Duration) Monitor {
	m := mon(MonitorICMP, timeout, 1, 1)
	m.Timeout = timeout
	m.DataLength = config.DefaultICMPDataLength
	return m
}

func TestICMPProbe(t *testing.T) {
	testutil.RequireRoot(t)
	noLeaks(t)
	c := NewChecker(nil, Options{})
	defer c.Close()
	for _, tc := range []struct {
		addr string
		size int
	}{
		{"127.0.0.1", 56}, {"127.0.0.1", 0}, {"127.0.0.1", 1400}, {"127.0.0.2", 56},
		{"::1", 56}, {"::1", 0}, {"::1", 1400}, {"::ffff:127.0.0.1", 56},
	} {
		m := icmpMonitor(time.Second)
		m.DataLength = tc.size
		ap := netip.AddrPortFrom(netip.MustParseAddr(tc.addr), 0)
		if _, err := runProbe(t, c, ap, m); err != nil {
			t.Errorf("icmp echo to %s with %d bytes: %v", tc.addr, tc.size, err)
		}
	}
	if !c.icmp.v4.raw || !c.icmp.v6.raw {
		t.Errorf("as root the pingers should use raw sockets")
	}

	// Many probes at once share one socket per family; each gets its own reply.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		addr := "127.0.0.1"
		if i%2 == 1 {
			addr = "::1"
		}
		wg.Go(func() {
			_, err := runProbe(t, c, netip.AddrPortFrom(netip.MustParseAddr(addr), 0), icmpMonitor(2*time.Second))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent echo: %v", err)
		}
	}
}

// throwawayNetns creates a network namespace with only lo (up, with
// 127.0.0.1 and ::1) and runs setup in it. Nothing in it can reach the
// machine's network. It goes away when the test ends and its sockets close.
func throwawayNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	testutil.RequireRoot(t)
	var ns netns.NsHandle
	err := testutil.InThread(func() error {
		var err error
		ns, err = netns.New() // switches this thread
		return err
	})
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	err = testutil.InNetns(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("netns: lo up: %v", err)
	}
	return ns
}

func sysctl(t *testing.T, ns netns.NsHandle, path, value string) {
	t.Helper()
	err := testutil.InNetns(ns, func() error { return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644) })
	if err != nil {
		t.Fatalf("sysctl %s=%s in the test netns: %v", path, value, err)
	}
}

func TestICMPFailures(t *testing.T) {
	ns := throwawayNetns(t)
	noLeaks(t)
	// The namespace's loopback ignores echo requests: a silent member.
	sysctl(t, ns, "net/ipv4/icmp_echo_ignore_all", "1")
	sysctl(t, ns, "net/ipv6/icmp/echo_ignore_all", "1")
	c := NewChecker(nil, Options{})
	defer c.Close()
	c.icmp.open = func(v6 bool) (p *pinger, err error) {
		err = testutil.InNetns(ns, func() error { p, err = openPinger(v6); return err })
		return p, err
	}
	for _, tc := range []struct {
		addr, want string
		slow       bool
	}{
		{"127.0.0.1", "icmp echo 127.0.0.1: no reply within 200ms", true},
		{"::1", "icmp echo ::1: no reply within 200ms", true},
		// Only lo exists in the namespace: no route, the send fails at once.
		{"192.0.2.1", "icmp echo 192.0.2.1: send: network is unreachable", false},
		{"2001:db8::1", "icmp echo 2001:db8::1: send: network is unreachable", false},
	} {
		took, err := runProbe(t, c, netip.AddrPortFrom(netip.MustParseAddr(tc.addr), 0), icmpMonitor(200*time.Millisecond))
		if err == nil {
			t.Errorf("icmp echo to %s in the silent netns succeeded", tc.addr)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("icmp echo to %s: %q, want %q", tc.addr, err, tc.want)
		}
		if tc.slow != (took >= 190*time.Millisecond) {
			t.Errorf("icmp echo to %s took %v (a timeout: %v)", tc.addr, took, tc.slow)
		}
	}

	// Echo answered again: the same sockets succeed.
	sysctl(t, ns, "net/ipv4/icmp_echo_ignore_all", "0")
	sysctl(t, ns, "net/ipv6/icmp/echo_ignore_all", "0")
	for _, a := range []string{"127.0.0.1", "::1"} {
		if _, err := runProbe(t, c, netip.AddrPortFrom(netip.MustParseAddr(a), 0), icmpMonitor(time.Second)); err != nil {
			t.Errorf("icmp echo to %s in the netns: %v", a, err)
		}
	}

	// Through a checker: members that stop answering go down after fall
	// probes and come back after rise.
	rec := newRecorder()
	c2 := NewChecker(rec, Options{})
	defer c2.Close()
	c2.icmp.open = c.icmp.open
	const interval = 100 * time.Millisecond
	m := icmpMonitor(interval)
	m.Timeout, m.Rise, m.Fall = 50*time.Millisecond, 2, 2
	v4, v6 := ids.MemberRef{Pool: "p", Member: "v4"}, ids.MemberRef{Pool: "p", Member: "v6"}
	if err := c2.Update([]Target{
		{ID: v4, Addr: netip.MustParseAddr("127.0.0.1"), Monitor: m},
		{ID: v6, Addr: netip.MustParseAddr("::1"), Monitor: m},
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * interval)
	if ev := rec.all(); len(ev) != 0 {
		t.Fatalf("answering members reported: %+v", ev)
	}
	sysctl(t, ns, "net/ipv4/icmp_echo_ignore_all", "1")
	sysctl(t, ns, "net/ipv6/icmp/echo_ignore_all", "1")
	silenced := time.Now()
	for _, id := range []ids.MemberRef{v4, v6} {
		e := rec.wait(t, 0, id, false, 2*time.Second)
		if d := e.at.Sub(silenced); d > 2*interval+m.Timeout+slack {
			t.Errorf("%s down %v after echo stopped; fall 2 at %v", id, d, interval)
		}
		if !strings.Contains(e.reason, `icmp monitor "m-icmp": 2 consecutive failures, last: icmp echo `) || !strings.Contains(e.reason, "no reply within 50ms") {
			t.Errorf("%s down reason %q", id, e.reason)
		}
	}
	sysctl(t, ns, "net/ipv4/icmp_echo_ignore_all", "0")
	sysctl(t, ns, "net/ipv6/icmp/echo_ignore_all", "0")
	for _, id := range []ids.MemberRef{v4, v6} {
		rec.wait(t, 2, id, true, 2*time.Second)
	}
}

// TestICMPPingSocket checks the fallback for hosts without CAP_NET_RAW:
// unprivileged ping sockets, allowed for gid 0 inside a throwaway netns.
func TestICMPPingSocket(t *testing.T) {
	ns := throwawayNetns(t)
	noLeaks(t)
	sysctl(t, ns, "net/ipv4/ping_group_range", "0 0")
	ps := &pingers{open: func(v6 bool) (p *pinger, err error) {
		err = testutil.InNetns(ns, func() error {
			conn, err := listenPingSocket(v6)
			if err != nil {
				return err
			}
			p = startPinger(conn, v6, false)
			return nil
		})
		return p, err
	}}
	defer ps.close()
	for _, a := range []string{"127.0.0.1", "::1"} {
		p := &icmpProber{probeBase: probeBase{addr: netip.AddrPortFrom(netip.MustParseAddr(a), 0), timeout: time.Second}, pingers: ps, size: 56}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := p.probe(ctx)
		cancel()
		if err != nil {
			t.Errorf("ping socket echo to %s: %v", a, err)
		}
	}
	if ps.v4.raw || ps.v6.raw {
		t.Errorf("pingers should be ping sockets")
	}
}

// TestICMPErrorMatching feeds the reader the ICMP errors a router would
// send back, quoting our request.
func TestICMPErrorMatching(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		p := &pinger{v6: v6, raw: true, id: 0x1234, waits: map[uint16]*pingWait{}, done: make(chan struct{})}
		dst := netip.MustParseAddr("192.0.2.7")
		router := netip.MustParseAddr("198.51.100.1")
		if v6 {
			dst, router = netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("2001:db8:ffff::1")
		}
		w := &pingWait{dst: dst, ch: make(chan error, 1)}
		p.waits[77] = w

		var msg []byte
		if !v6 {
			ip := make([]byte, 20)
			ip[0], ip[9] = 0x45, 1
			copy(ip[12:], netip.MustParseAddr("192.0.2.1").AsSlice())
			copy(ip[16:], dst.AsSlice())
			msg = append([]byte{icmp4Unreachable, 1, 0, 0, 0, 0, 0, 0}, ip...)
			msg = append(msg, icmp4Echo, 0, 0, 0, 0x12, 0x34, 0, 77)
		} else {
			ip := make([]byte, 40)
			ip[0], ip[6] = 0x60, 58
			copy(ip[24:], dst.AsSlice())
			msg = append([]byte{icmp6Unreachable, 3, 0, 0, 0, 0, 0, 0}, ip...)
			msg = append(msg, icmp6Echo, 0, 0, 0, 0x12, 0x34, 0, 77)
		}
		// Someone else's request (other identifier) is not ours.
		other := append([]byte(nil), msg...)
		binary.BigEndian.PutUint16(other[len(other)-4:], 0x9999)
		p.handle(other, router)
		select {
		case err := <-w.ch:
			t.Fatalf("v6=%v: matched another identifier: %v", v6, err)
		default:
		}
		p.handle(msg, router)
		select {
		case err := <-w.ch:
			want := "icmp echo " + dst.String() + ": destination unreachable"
			if err == nil || len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
				t.Errorf("v6=%v: %v, want %q...", v6, err, want)
			}
		default:
			t.Errorf("v6=%v: the unreachable error did not reach the probe", v6)
		}
	}
}
