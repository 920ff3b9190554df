package mirror

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameEntry compares entries, times by instant.
func sameEntry(a, b Entry) bool {
	return a.Table == b.Table && a.Client == b.Client && a.Key == b.Key && a.Server == b.Server && a.Op == b.Op &&
		a.Updated.Equal(b.Updated) && a.Created.Equal(b.Created)
}

func sampleEntries() []Entry {
	now := time.Unix(1_700_000_000, 123456789)
	return []Entry{
		entry("profile:sticky", "198.51.100.1", "10.0.1.11:8080", now),
		entry("profile:web/vs:a", "2001:db8::1", "[2001:db8::80]:0", now.Add(time.Second)),
		{Table: "profile:gen", Key: "session=abc;def", Server: netip.MustParseAddrPort("10.0.0.5:443"), Op: Upsert, Updated: now},
		{Table: "profile:sticky", Client: netip.MustParseAddr("198.51.100.2"), Op: Delete, Updated: now},
		{Table: "profile:sticky", Client: netip.MustParseAddr("::ffff:198.51.100.3"), Server: netip.MustParseAddrPort("[::ffff:10.0.0.1]:80"), Op: Upsert},
		{Table: strings.Repeat("t", MaxTableLen), Key: strings.Repeat("k", MaxKeyLen), Server: netip.MustParseAddrPort("10.0.0.1:1"), Op: Upsert},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	in := sampleEntries()
	m, err := decodeMessage(encodeEntries(nil, in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.typ != msgEntries || len(m.entries) != len(in) {
		t.Fatalf("decoded %+v", m)
	}
	for i := range in {
		if !sameEntry(in[i], m.entries[i]) {
			t.Errorf("entry %d: got %+v, want %+v", i, m.entries[i], in[i])
		}
	}
	// The frame builder writes the same bytes.
	var f entriesFrame
	f.reset()
	for i := range in {
		f.add(&in[i])
	}
	if !bytes.Equal(f.buf, encodeEntries(nil, in)) {
		t.Errorf("entriesFrame and encodeEntries differ")
	}
	at := time.Unix(1_700_000_000, 5)
	for _, tc := range []struct {
		b    []byte
		want message
	}{
		{encodeSyncBegin(nil), message{typ: msgSyncBegin}},
		{encodeSyncEnd(nil, 12345), message{typ: msgSyncEnd, count: 12345}},
		{encodeGoodbye(nil, "bye"), message{typ: msgGoodbye, reason: "bye"}},
		{encodeGoodbye(nil, strings.Repeat("r", 300)), message{typ: msgGoodbye, reason: strings.Repeat("r", 255)}},
		{encodeEntries(nil, nil), message{typ: msgEntries}},
	} {
		got, err := decodeMessage(tc.b, nil)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decode %x: %+v, %v; want %+v", tc.b, got, err, tc.want)
		}
	}
	hb, err := decodeMessage(encodeHeartbeat(nil, at), nil)
	if err != nil || !hb.at.Equal(at) {
		t.Errorf("heartbeat: %+v %v", hb, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encodeEntries(nil, sampleEntries()[:1])
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "empty frame"},
		{"unknown type", []byte{0x42}, "unknown message type 66"},
		{"truncated entries", good[:len(good)-3], "truncated"},
		{"trailing", append(append([]byte{}, good...), 1), "trailing bytes"},
		{"count too big", []byte{msgEntries, 0, 200, 1}, "cannot fit"},
		{"sync end short", []byte{msgSyncEnd, 1, 2}, "truncated sync count"},
		{"goodbye short", []byte{msgGoodbye, 10, 'a'}, "truncated reason"},
		{"heartbeat long", append(encodeHeartbeat(nil, time.Now()), 0), "trailing"},
		{"bad varint", append([]byte{msgEntries, 0, 1, 1, 1, 'x'}, bytes.Repeat([]byte{0xff}, 30)...), "bad key length"},
		{"key too long", append([]byte{msgEntries, 0, 1, 1, 1, 'x', 0x81, 0x40}, make([]byte, 30)...), "key of 8193 bytes"},
		{"no client nor key", encodeRaw(Entry{Table: "t", Op: Upsert, Server: netip.MustParseAddrPort("10.0.0.1:1")}), "exactly one of"},
		{"client and key", encodeRaw(Entry{Table: "t", Key: "k", Client: netip.MustParseAddr("10.0.0.1"), Op: Delete}), "exactly one of"},
		{"upsert without server", encodeRaw(Entry{Table: "t", Key: "k", Op: Upsert}), "has no server"},
		{"no table", encodeRaw(Entry{Key: "k", Op: Delete}), "no table"},
		{"op zero", encodeRaw(Entry{Table: "t", Key: "k", Op: 0}), "unknown operation"},
	} {
		_, err := decodeMessage(tc.b, nil)
		if err == nil || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.want)
		}
	}
}

// encodeRaw encodes an entry without validating it.
func encodeRaw(e Entry) []byte {
	return appendEntry([]byte{msgEntries, 0, 1}, &e)
}

func TestDecodeReusesScratch(t *testing.T) {
	scratch := make([]Entry, 0, 8)
	m, err := decodeMessage(encodeEntries(nil, sampleEntries()[:3]), scratch)
	if err != nil {
		t.Fatal(err)
	}
	if &m.entries[0] != &scratch[:1][0] {
		t.Errorf("scratch was not reused")
	}
}

func TestEntriesFrameStaysSmall(t *testing.T) {
	var f entriesFrame
	f.reset()
	e := sampleEntries()[5] // the largest entry possible
	for !f.full() {
		f.add(&e)
	}
	if len(f.buf) > MaxFrameSize {
		t.Errorf("a full entries frame has %d bytes, more than %d", len(f.buf), MaxFrameSize)
	}
}

func TestNewer(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	base := entry("profile:x", "192.0.2.1", "10.0.0.1:80", t0)
	later := base
	later.Updated = t0.Add(time.Millisecond)
	later.Server = netip.MustParseAddrPort("10.0.0.2:80")
	del := base
	del.Op, del.Server, del.Updated = Delete, netip.AddrPort{}, t0.Add(time.Second)
	recreated := base
	recreated.Created, recreated.Updated = t0.Add(2*time.Second), t0.Add(2*time.Second)
	sameTimeOtherServer := base
	sameTimeOtherServer.Server = netip.MustParseAddrPort("10.0.0.9:80")
	sameTimeDelete := base
	sameTimeDelete.Op, sameTimeDelete.Server = Delete, netip.AddrPort{}
	newerCreated := base
	newerCreated.Created = t0.Add(time.Nanosecond)
	newerCreated.Updated = t0

	for _, tc := range []struct {
		name string
		a, b Entry
		want bool
	}{
		{"later update wins", later, base, true},
		{"earlier update loses", base, later, false},
		{"deletion after the update wins", del, later, true},
		{"old upsert does not undo a deletion", later, del, false},
		{"re-creation after a deletion wins", recreated, del, true},
		{"identical is not newer", base, base, false},
		{"tie: later creation", newerCreated, base, true},
		{"tie: delete over upsert", sameTimeDelete, base, true},
		{"tie: upsert under delete", base, sameTimeDelete, false},
		{"tie: greater server", sameTimeOtherServer, base, true},
		{"tie: lesser server", base, sameTimeOtherServer, false},
	} {
		if got := Newer(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: Newer = %v, want %v", tc.name, got, tc.want)
		}
		if tc.want && Newer(tc.b, tc.a) {
			t.Errorf("%s: both are newer than the other", tc.name)
		}
	}
}

func TestQueueCoalescesAndBounds(t *testing.T) {
	q := newQueue(3)
	t0 := time.Unix(100, 0)
	e := func(c string, srv string) *Entry {
		x := entry("profile:x", c, srv, t0)
		return &x
	}
	for _, x := range []*Entry{e("192.0.2.1", "10.0.0.1:1"), e("192.0.2.2", "10.0.0.1:1"), e("192.0.2.1", "10.0.0.2:1"), e("192.0.2.3", "10.0.0.1:1")} {
		if !q.push(x, t0) {
			t.Fatalf("push dropped with room left")
		}
	}
	if q.push(e("192.0.2.4", "10.0.0.1:1"), t0.Add(time.Second)) {
		t.Errorf("a full queue took a new key")
	}
	if !q.push(e("192.0.2.3", "10.0.0.3:1"), t0.Add(time.Second)) {
		t.Errorf("a full queue refused an update of a queued key")
	}
	n, oldest := q.stats()
	if n != 3 || !oldest.Equal(t0) {
		t.Errorf("stats %d %v", n, oldest)
	}
	got := q.pop(nil, 10)
	want := []string{"192.0.2.1/10.0.0.2:1", "192.0.2.2/10.0.0.1:1", "192.0.2.3/10.0.0.3:1"}
	if len(got) != 3 {
		t.Fatalf("pop: %+v", got)
	}
	for i, g := range got {
		if s := g.Client.String() + "/" + g.Server.String(); s != want[i] {
			t.Errorf("pop[%d] = %s, want %s (first position, last version)", i, s, want[i])
		}
	}
	if n, _ := q.stats(); n != 0 || len(q.pop(nil, 10)) != 0 {
		t.Errorf("queue not empty after pop")
	}
}

func TestQueueLongRun(t *testing.T) {
	// Interleaved pushes and partial pops keep order, never exceed the
	// bound, and keep the backing array small.
	q := newQueue(100)
	next, want := 0, 0
	now := time.Now()
	for round := 0; round < 2000; round++ {
		for i := 0; i < 7; i++ {
			e := entry("profile:x", clientN(next), "10.0.0.1:1", now)
			if q.push(&e, now) {
				next++
			} else {
				break
			}
		}
		for _, e := range q.pop(nil, 5) {
			if e.Client.String() != clientN(want) {
				t.Fatalf("popped %s, want %s", e.Client, clientN(want))
			}
			want++
		}
		if n, _ := q.stats(); n > 100 || cap(q.items) > 512 {
			t.Fatalf("queue of %d entries in an array of %d", n, cap(q.items))
		}
	}
}

// sealedPair returns a writer and a reader sharing one direction's key.
func sealedPair(t testing.TB) (*frameConn, *frameConn, *bytes.Buffer) {
	block, _ := aes.NewCipher(make([]byte, 32))
	aead, _ := cipher.NewGCM(block)
	var wire bytes.Buffer
	w := &frameConn{bw: bufio.NewWriter(&wire), seal: aead}
	r := &frameConn{br: bufio.NewReader(&wire), open: aead}
	return w, r, &wire
}

func TestSealedFrames(t *testing.T) {
	w, r, wire := sealedPair(t)
	var frames [][]byte
	for i := 0; i < 3; i++ {
		before := wire.Len()
		w.write(encodeSyncEnd(nil, uint64(i)))
		w.flush()
		frames = append(frames, append([]byte{}, wire.Bytes()[before:]...))
	}
	for i := 0; i < 3; i++ {
		p, err := r.read()
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := decodeMessage(p, nil); m.count != uint64(i) {
			t.Errorf("frame %d: %+v", i, m)
		}
	}
	check := func(name string, wire []byte, want string) {
		_, r2, _ := sealedPair(t)
		r2.br = bufio.NewReader(bytes.NewReader(wire))
		var err error
		for err == nil {
			_, err = r2.read()
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	check("replayed", concat(frames[0], frames[1], frames[1]), "frame 2 failed authentication")
	check("reordered", concat(frames[0], frames[2], frames[1]), "frame 1 failed authentication")
	check("dropped", concat(frames[0], frames[2]), "frame 1 failed authentication")
	flipped := concat(frames[0])
	flipped[len(flipped)-1] ^= 0x80
	check("altered", flipped, "frame 0 failed authentication")
	check("truncated", frames[0][:len(frames[0])-1], "truncated frame")
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestHelloRoundTrip(t *testing.T) {
	h, err := newHello(authTLS, ActiveActive, 0xdeadbeef, "[2001:db8::1]:7946")
	if err != nil {
		t.Fatal(err)
	}
	got, raw, err := readHello(bytes.NewReader(h.marshal()), authTLS)
	if err != nil || got != h || !bytes.Equal(raw, h.marshal()) {
		t.Errorf("hello: %+v %v", got, err)
	}
	if _, _, err := readHello(bytes.NewReader(h.marshal()), authPSK); err == nil || !strings.Contains(err.Error(), "authenticates with tls") {
		t.Errorf("auth mismatch: %v", err)
	}
	bad := h.marshal()
	bad[len(protoMagic)] = 9
	if _, _, err := readHello(bytes.NewReader(bad), authTLS); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Errorf("version: %v", err)
	}
	if _, err := newHello(authPSK, ActiveStandby, 1, strings.Repeat("a", 300)); err == nil {
		t.Errorf("a long advertised address was accepted")
	}
}

// FuzzDecodeMessage: any payload decodes or fails cleanly, and what decodes
// encodes back to a payload that decodes to the same message.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeEntries(nil, sampleEntries()[:5]))
	f.Add(encodeSyncBegin(nil))
	f.Add(encodeSyncEnd(nil, 7))
	f.Add(encodeHeartbeat(nil, time.Unix(1, 2)))
	f.Add(encodeGoodbye(nil, "shutting down"))
	f.Add([]byte{msgEntries, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b, nil)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error is not malformed: %v", err)
			}
			return
		}
		var again []byte
		switch m.typ {
		case msgEntries:
			again = encodeEntries(nil, m.entries)
		case msgSyncBegin:
			again = encodeSyncBegin(nil)
		case msgSyncEnd:
			again = encodeSyncEnd(nil, m.count)
		case msgHeartbeat:
			again = encodeHeartbeat(nil, m.at)
		case msgGoodbye:
			again = encodeGoodbye(nil, m.reason)
		}
		m2, err := decodeMessage(again, nil)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if len(m.entries) != len(m2.entries) || m.typ != m2.typ || m.count != m2.count || !m.at.Equal(m2.at) || m.reason != m2.reason {
			t.Fatalf("round trip changed the message: %+v -> %+v", m, m2)
		}
		for i := range m.entries {
			if !sameEntry(m.entries[i], m2.entries[i]) {
				t.Fatalf("entry %d changed: %+v -> %+v", i, m.entries[i], m2.entries[i])
			}
		}
	})
}

// FuzzReadFrame: a byte stream from the network never panics the frame
// reader, and anything it opens was sealed by the writer.
func FuzzReadFrame(f *testing.F) {
	w, _, wire := sealedPair(f)
	w.write(encodeSyncBegin(nil))
	w.write(encodeEntries(nil, sampleEntries()[:2]))
	w.flush()
	f.Add(wire.Bytes())
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{0, 0, 0, 17, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, r, _ := sealedPair(t)
		r.br = bufio.NewReader(bytes.NewReader(b))
		for i := 0; i < 100; i++ {
			p, err := r.read()
			if err != nil {
				return
			}
			decodeMessage(p, nil)
		}
	})
}

// FuzzHandshake: whatever a dialer sends, the acceptor's handshake ends
// with an error (it cannot know the key) and does not panic or hang.
func FuzzHandshake(f *testing.F) {
	h, _ := newHello(authPSK, ActiveStandby, 1, "127.0.0.1:7946")
	f.Add(h.marshal())
	f.Add(append(h.marshal(), make([]byte, proofLen)...))
	f.Add([]byte(protoMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		go func() {
			buf := make([]byte, 512)
			for {
				if _, err := c2.Read(buf); err != nil {
					return
				}
			}
		}()
		go func() {
			c2.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			c2.Write(b)
			time.Sleep(10 * time.Millisecond)
			c2.Close()
		}()
		c1.SetDeadline(time.Now().Add(100 * time.Millisecond))
		local, _ := newHello(authPSK, ActiveStandby, 2, "")
		if _, _, err := handshakePSK(c1, bufio.NewReader(c1), testPSK, local, false); err == nil {
			t.Fatalf("a handshake without the key succeeded")
		}
	})
}
