package loader

import (
	"errors"
	"os"
	"testing"
	"time"
)

func TestEventsOnlyForMirroredTables(t *testing.T) {
	f := newFixture(t, Options{})
	s := standardState()
	s.Tables[0].Mirror = true // VS 0: VIP4:80/tcp
	if err := f.d.Apply(s); err != nil {
		t.Fatal(err)
	}
	events, err := f.d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	next := func() (Event, error) {
		events.SetDeadline(time.Now().Add(500 * time.Millisecond))
		return events.Read()
	}

	f.run(syn(client4a, vip4, 47000, 53).build(t), f.cli)    // VS 4? no: VIP4:53 is udp, tcp misses
	f.run(udpPkt(client4a, vip4, 47000, 53).build(t), f.cli) // VS 1: not mirrored
	f.run(syn(client4a, vip4, 47001, 80).build(t), f.cli)    // VS 0: created
	f.run(syn(client4a, vip4, 47002, 80).build(t), f.cli)    // hit: no event
	ev, err := next()
	if err != nil {
		t.Fatalf("no event for a new client of a mirrored table: %v", err)
	}
	e, _ := f.entry(NewTableID(0, true), client4a)
	if ev.Type != EventCreated || ev.TableID != NewTableID(0, true) || ev.Client != client4a || ev.Server != e.Server || ev.Time != e.Created {
		t.Fatalf("event %+v does not describe entry %+v", ev, e)
	}
	if ev, err := next(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("unexpected second event %+v (err %v): hits and unmirrored tables publish nothing", ev, err)
	}

	// The GC's expiry is published too.
	f.run(pkt{src: client4a, dst: vip4, sport: 47001, dport: 80, flags: "R"}.build(t), f.cli)
	f.run(pkt{src: client4a, dst: vip4, sport: 47002, dport: 80, flags: "R"}.build(t), f.cli)
	if err := f.d.SetClockOffset(time.Hour); err != nil {
		t.Fatal(err)
	}
	e, _ = f.entry(NewTableID(0, true), client4a)
	reqs := []GCRequest{ExpireEntry(e, time.Minute)}
	if err := f.d.RunGC(reqs); err != nil || reqs[0].Result != GCDone {
		t.Fatalf("expire: %v %v", err, reqs[0].Result)
	}
	ev, err = next()
	if err != nil || ev.Type != EventExpired || ev.Client != client4a || ev.Server != e.Server {
		t.Fatalf("expiry event %+v, %v", ev, err)
	}
}
