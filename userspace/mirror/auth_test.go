package mirror

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// assertNoKey checks that no log holds the key, raw or encoded.
func assertNoKey(t *testing.T, key []byte, logs ...*logBuf) {
	t.Helper()
	for _, l := range logs {
		s := l.String()
		for _, form := range []string{string(key), hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key)} {
			if strings.Contains(s, form) {
				t.Errorf("a log holds the key:\n%s", s)
			}
		}
	}
}

func TestWrongPSKRefusedOnBothSides(t *testing.T) {
	b := startNode(t, testConfig(), nil)
	ca := testConfig(b.addr)
	ca.PSK = []byte("another key, long enough to be accepted: 0123456789")
	a := startNode(t, ca, nil)

	// b refuses a, saying who and why; a learns that b refused its key.
	line := b.log.wait(t, "refused connection", "wrong key")
	if !strings.Contains(line, "remote=127.0.0.1:") {
		t.Errorf("b's refusal does not name the remote address: %s", line)
	}
	a.log.wait(t, "authentication with peer failed", "peer="+b.addr, "refused this node's pre-shared key")
	eventually(t, 5*time.Second, func() bool {
		s := a.status(t, b.addr)
		return s.State != StateUp && strings.Contains(s.LastError, "pre-shared key")
	}, "a's status to show the refusal: %+v", a.Status())
	a.Publish(entry("profile:x", "192.0.2.1", "10.0.0.1:80", time.Now()))
	time.Sleep(50 * time.Millisecond)
	if b.local.appliedCount() != 0 || len(b.Status()) != 0 {
		t.Errorf("b accepted something from a peer with the wrong key: %+v", b.Status())
	}
	assertNoKey(t, testPSK, a.log, b.log)
	assertNoKey(t, ca.PSK, a.log, b.log)
}

// TestAcceptorWithWrongKeyRefused: the dialer refuses an acceptor that
// cannot prove the key (here a peer that answers with a made-up proof).
func TestAcceptorWithoutKeyRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, _, err := readHello(br, authPSK); err != nil {
			return
		}
		h, _ := newHello(authPSK, ActiveStandby, 42, "")
		c.Write(h.marshal())
		io.ReadFull(br, make([]byte, proofLen))
		c.Write(append([]byte{verdictAccept}, bytes.Repeat([]byte{7}, proofLen)...))
		io.Copy(io.Discard, c)
	}()
	cfg := testConfig(ln.Addr().String())
	cfg.Listen = ""
	a := startNode(t, cfg, nil)
	a.log.wait(t, "authentication with peer failed", "failed to prove the pre-shared key")
}

func TestGarbageClientRefused(t *testing.T) {
	a := startNode(t, testConfig(), nil)
	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("x", 100)),
		bytes.Repeat([]byte{0xff}, 200),
		// A TLS client talking to a PSK node.
		{0x16, 0x03, 0x01, 0x00, 0xa0, 0x01, 0x00, 0x00, 0x9c, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		c, err := net.Dial("tcp", a.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(garbage)
		waitClosed(t, c)
		c.Close()
	}
	eventually(t, 5*time.Second, func() bool {
		return len(a.log.lines("refused connection", "another protocol")) == 3
	}, "three refusals; log:\n%s", a.log)
	// A client that connects and says nothing is cut off after the handshake timeout.
	cfg := testConfig()
	cfg.HandshakeTimeout = 100 * time.Millisecond
	b := startNode(t, cfg, nil)
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitClosed(t, c)
	b.log.wait(t, "refused connection", "handshake timed out")
}

func TestReplayedHandshakeRefused(t *testing.T) {
	a := startNode(t, testConfig(), nil)
	// Record what a legitimate dialer sends.
	var rec bytes.Buffer
	c, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := newHello(authPSK, ActiveStandby, 77, "")
	_, _, err = handshakePSK(&recordConn{Conn: c, w: &rec}, bufio.NewReader(c), testPSK, h, true)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Replay it: the node's new nonce makes the old proof worthless.
	c2, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write(rec.Bytes())
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c2)
	if _, _, err := readHello(br, authPSK); err != nil {
		t.Fatal(err)
	}
	v, err := br.ReadByte()
	if err != nil || v != verdictRefuse {
		t.Errorf("verdict %d, %v; want a refusal", v, err)
	}
	a.log.wait(t, "refused connection", "wrong key")
}

type recordConn struct {
	net.Conn
	w io.Writer
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.w.Write(p)
	return c.Conn.Write(p)
}

func TestReplayedAndForgedFramesRejected(t *testing.T) {
	a := startNode(t, testConfig(), nil)
	e := entry("profile:x", "192.0.2.1", "10.0.0.1:80", time.Now())
	frame := encodeEntries(nil, []Entry{e})

	for _, tc := range []struct {
		name   string
		mangle func(wire []byte) []byte // wire is one sealed frame: header and ciphertext
		reason string
	}{
		{"replayed", func(w []byte) []byte { return append(append([]byte{}, w...), w...) }, "failed authentication"},
		{"forged", func(w []byte) []byte { w[len(w)-20] ^= 1; return w }, "failed authentication"},
		{"length altered", func(w []byte) []byte {
			w[3]--
			return w[:len(w)-1]
		}, "failed authentication"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := dialRaw(t, a.addr, testPSK)
			var wire bytes.Buffer
			p.fc.bw.Reset(&wire)
			if err := p.fc.write(frame); err != nil {
				t.Fatal(err)
			}
			p.fc.flush()
			before := a.local.appliedCount()
			p.conn.Write(tc.mangle(wire.Bytes()))
			waitClosed(t, p.conn)
			a.log.wait(t, "connection closed", tc.reason)
			if got := a.local.appliedCount() - before; tc.name == "replayed" && got != 1 {
				t.Errorf("the entry was applied %d times, want once", got)
			} else if tc.name != "replayed" && got != 0 {
				t.Errorf("a forged frame was applied")
			}
		})
	}
}

func TestTLSForeignCARefused(t *testing.T) {
	ca := newTestCA(t, "mirroring CA")
	other := newTestCA(t, "some other CA")
	b := startNode(t, tlsTestConfig(ca, ca.issue(t, "b")), nil)
	// a trusts the shared CA but holds a certificate of another CA.
	a := startNode(t, tlsTestConfig(ca, other.issue(t, "intruder"), b.addr), nil)
	b.log.wait(t, "refused connection", "tls handshake", "certificate")
	a.log.wait(t, "authentication with peer failed", "tls")
	// c holds a good certificate but trusts another CA: it refuses b.
	cc := tlsTestConfig(other, ca.issue(t, "c"), b.addr)
	cc.Listen = ""
	c := startNode(t, cc, nil)
	c.log.wait(t, "authentication with peer failed", "certificate signed by unknown authority")
	if len(b.Status()) != 0 {
		t.Errorf("b accepted a peer: %+v", b.Status())
	}

	// A TLS client with no certificate, and a PSK node, are refused too.
	conn, err := tls.Dial("tcp", b.addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Errorf("a TLS client without a certificate was served")
	}
	b.log.wait(t, "refused connection", "certificate")
	pc := testConfig(b.addr)
	pc.Listen = ""
	p := startNode(t, pc, nil)
	p.log.wait(t, "authentication with peer failed", "peer="+b.addr)
	b.log.wait(t, "refused connection", "first record does not look like a TLS handshake")
}
