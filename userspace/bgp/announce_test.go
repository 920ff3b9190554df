package bgp

import (
	"net/netip"
	"testing"
	"time"
)

func vip(s string, vss ...string) VIP {
	return VIP{Route: Route{Prefix: netip.MustParsePrefix(s)}, VirtualServers: vss}
}

func TestAnnouncerConditions(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := NewAnnouncer([]VIP{vip("192.0.2.1/32", "web", "dns"), vip("2001:db8::1/128", "web6")}, 2*time.Second)
	ok := Input{Now: t0, Forwarding: true, Synced: true, InService: map[string]int{"web": 1, "web6": 2}}
	check := func(in Input, want ...string) []Announcement {
		t.Helper()
		got := map[string]bool{}
		for _, r := range a.Evaluate(in) {
			got[r.Prefix.String()] = true
		}
		if len(got) != len(want) {
			t.Fatalf("announced %v, want %v (%+v)", got, want, a.Announcements())
		}
		for _, w := range want {
			if !got[w] {
				t.Fatalf("announced %v, want %v", got, want)
			}
		}
		return a.Announcements()
	}
	// Before the bulk sync nothing is announced.
	in := ok
	in.Synced, in.SyncDetail = false, "waiting"
	if an := check(in); an[0].Reason != ReasonWaitingSync || an[0].Detail != "waiting" {
		t.Fatalf("%+v", an[0])
	}
	// Ready: both, at once (never unservable, so no damping).
	check(ok, "192.0.2.1/32", "2001:db8::1/128")
	// One virtual server of the address in service is enough.
	in = ok
	in.InService = map[string]int{"dns": 1, "web6": 1}
	check(in, "192.0.2.1/32", "2001:db8::1/128")
	// No member: withdrawn at once, with the reason.
	in.Now = t0.Add(time.Second)
	in.InService = map[string]int{"web6": 1}
	if an := check(in, "2001:db8::1/128"); an[0].Reason != ReasonNoMember || an[0].Announced || an[0].Changes != 2 {
		t.Fatalf("%+v", an[0])
	}
	// Servable again: damped for 2s.
	in.InService = map[string]int{"web": 1, "web6": 1}
	in.Now = t0.Add(1500 * time.Millisecond)
	if an := check(in, "2001:db8::1/128"); an[0].Reason != ReasonDamping || an[0].AnnounceAt == nil || !an[0].AnnounceAt.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("%+v", an[0])
	}
	// A flap during the damping interval restarts it.
	in.Now = t0.Add(2500 * time.Millisecond)
	in.InService = map[string]int{"web6": 1}
	check(in, "2001:db8::1/128")
	in.InService = map[string]int{"web": 1, "web6": 1}
	in.Now = t0.Add(4 * time.Second)
	check(in, "2001:db8::1/128")
	in.Now = t0.Add(4500 * time.Millisecond)
	if an := check(in, "192.0.2.1/32", "2001:db8::1/128"); an[0].Changes != 3 {
		t.Fatalf("changes %d, want 3", an[0].Changes)
	}
	// Datapath, drain and stop withdraw everything, in that order of reasons.
	in.Forwarding, in.ForwardingDetail = false, "interface eth0 is down"
	if an := check(in); an[0].Reason != ReasonNotForwarding || an[0].Detail != "interface eth0 is down" {
		t.Fatalf("%+v", an[0])
	}
	in.Draining = true
	if an := check(in); an[1].Reason != ReasonDraining {
		t.Fatalf("%+v", an[1])
	}
	in.Stopping = true
	if an := check(in); an[1].Reason != ReasonStopping {
		t.Fatalf("%+v", an[1])
	}
	// Reload: a removed VIP goes, a new one starts withdrawn.
	a.SetVIPs([]VIP{vip("192.0.2.9/32", "new")})
	in = ok
	in.Now = t0.Add(time.Minute)
	in.InService = map[string]int{"new": 1}
	check(in, "192.0.2.9/32")
}

// A member that flaps faster than the damping interval keeps the VIP
// withdrawn: at most one announcement per interval.
func TestAnnouncerDampsFlapping(t *testing.T) {
	const damping = time.Second
	a := NewAnnouncer([]VIP{vip("192.0.2.1/32", "web")}, damping)
	t0 := time.Unix(1000, 0)
	up := true
	announcements := 0
	prev := false
	for ms := 0; ms < 10000; ms += 10 {
		if ms%300 == 0 {
			up = !up
		}
		n := 0
		if up {
			n = 1
		}
		got := len(a.Evaluate(Input{Now: t0.Add(time.Duration(ms) * time.Millisecond), Forwarding: true, Synced: true, InService: map[string]int{"web": n}})) == 1
		if got && !prev {
			announcements++
		}
		prev = got
	}
	if announcements > 10000/int(damping.Milliseconds())+1 {
		t.Fatalf("%d announcements in 10s with damping %s", announcements, damping)
	}
	if announcements != 0 {
		t.Fatalf("a member flapping every 300ms was announced %d times with 1s damping", announcements)
	}
}
