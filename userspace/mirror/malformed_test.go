package mirror

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// TestMalformedInputsCloseOnlyThatConnection sends broken input on new
// connections to a, while a keeps mirroring to its healthy peer b.
func TestMalformedInputsCloseOnlyThatConnection(t *testing.T) {
	a, b := startPair(t, testConfig(), testConfig(), nil, nil)
	good := encodeEntries(nil, []Entry{entry("profile:x", "192.0.2.1", "10.0.0.1:80", time.Now())})
	badFamily := append([]byte{}, good...)
	badFamily[3+1+1+len("profile:x")+1] = 9 // the client address family
	header := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

	cases := []struct {
		name   string
		raw    []byte                         // sent before authenticating
		after  func(t *testing.T, p *rawPeer) // sent after authenticating
		reason string
	}{
		{name: "random bytes", raw: randomBytes(4096), reason: "another protocol"},
		{name: "truncated hello", raw: []byte(protoMagic + "\x01"), reason: "peer closed the connection during the handshake, before its hello"},
		{name: "oversized length", after: func(t *testing.T, p *rawPeer) {
			p.conn.Write(header(MaxFrameSize + gcmTagLen + 1))
		}, reason: "exceeds the maximum"},
		{name: "huge length", after: func(t *testing.T, p *rawPeer) {
			p.conn.Write(header(0xffffffff))
		}, reason: "exceeds the maximum"},
		{name: "empty frame", after: func(t *testing.T, p *rawPeer) {
			p.conn.Write(header(0))
		}, reason: "too short"},
		{name: "truncated frame", after: func(t *testing.T, p *rawPeer) {
			p.conn.Write(append(header(100), make([]byte, 10)...))
			p.conn.(*net.TCPConn).CloseWrite()
		}, reason: "truncated frame: the connection closed after 10 of 100 bytes"},
		{name: "truncated header", after: func(t *testing.T, p *rawPeer) {
			p.conn.Write([]byte{0, 0})
			p.conn.(*net.TCPConn).CloseWrite()
		}, reason: "truncated frame header"},
		{name: "unencrypted frame", after: func(t *testing.T, p *rawPeer) {
			p.conn.Write(append(header(uint32(len(good)+gcmTagLen)), append(good, make([]byte, gcmTagLen)...)...))
		}, reason: "failed authentication"},
		{name: "unknown message type", after: func(t *testing.T, p *rawPeer) {
			p.send(t, []byte{99, 1, 2, 3})
		}, reason: "unknown message type 99"},
		{name: "bad address family", after: func(t *testing.T, p *rawPeer) {
			p.send(t, badFamily)
		}, reason: "unknown client family 9"},
		{name: "entry count too big", after: func(t *testing.T, p *rawPeer) {
			p.send(t, []byte{msgEntries, 0xff, 0xff, 1, 2, 3})
		}, reason: "65535 entries cannot fit"},
		{name: "trailing bytes", after: func(t *testing.T, p *rawPeer) {
			p.send(t, append(append([]byte{}, good...), 0))
		}, reason: "trailing bytes"},
		{name: "invalid entry", after: func(t *testing.T, p *rawPeer) {
			e := entry("profile:x", "192.0.2.1", "10.0.0.1:80", time.Now())
			e.Op = 7
			var f entriesFrame
			f.reset()
			f.add(&e)
			p.send(t, f.buf)
		}, reason: "unknown operation 7"},
		{name: "silence", after: func(t *testing.T, p *rawPeer) {}, reason: "heartbeat timeout"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var conn net.Conn
			if tc.after != nil {
				p := dialRaw(t, a.addr, testPSK)
				tc.after(t, p)
				conn = p.conn
			} else {
				c, err := net.Dial("tcp", a.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Write(tc.raw)
				if tc.name == "truncated hello" {
					c.(*net.TCPConn).CloseWrite()
				}
				conn = c
			}
			waitClosed(t, conn)
			a.log.wait(t, tc.reason)
			// a still mirrors to b.
			e := entry("profile:x", clientN(1000+i), "10.0.0.1:80", time.Now())
			a.Publish(a.local.set(e))
			eventually(t, 5*time.Second, func() bool { _, ok := b.local.get(e.ID()); return ok }, "a marker entry on b")
		})
	}
	if s := a.status(t, b.addr); s.State != StateUp {
		t.Errorf("a's link to b after the abuse: %+v", s)
	}
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
