package mirror

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Protocol constants. The labels bind every proof and key to this protocol
// and to one direction, so a proof cannot be reflected back or reused.
const (
	protoMagic      = "LIMPETMR"
	protoVersion    = 1
	labelTranscript = "limpet-mirror v1 transcript"
	labelDialer     = "limpet-mirror v1 dialer proof"
	labelAcceptor   = "limpet-mirror v1 acceptor proof"
	labelKeyD2A     = "limpet-mirror v1 key dialer to acceptor"
	labelKeyA2D     = "limpet-mirror v1 key acceptor to dialer"
	nonceLen        = 32
	proofLen        = sha256.Size
	helloFixedLen   = len(protoMagic) + 1 + 1 + 1 + nonceLen + 8 + 1
	maxAdvertise    = 255
	authPSK         = 1
	authTLS         = 2
	verdictAccept   = 0
	verdictRefuse   = 1
	frameHeaderLen  = 4
	gcmTagLen       = 16
)

// hello opens a connection, from each side:
//
//	"LIMPETMR" | u8 version | u8 auth (1 psk, 2 tls) | u8 mode |
//	32-byte random nonce | u64 instance | u8 length | advertised address
//
// In PSK mode it travels in the clear before authentication; in TLS mode
// inside the TLS session.
type hello struct {
	auth      byte
	mode      Mode
	nonce     [nonceLen]byte
	instance  uint64
	advertise string
}

func (h *hello) marshal() []byte {
	b := make([]byte, 0, helloFixedLen+len(h.advertise))
	b = append(b, protoMagic...)
	b = append(b, protoVersion, h.auth, byte(h.mode))
	b = append(b, h.nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, h.instance)
	b = append(b, byte(len(h.advertise)))
	return append(b, h.advertise...)
}

// readHello reads and checks a hello; raw is its encoding, for the transcript.
func readHello(r io.Reader, auth byte) (h hello, raw []byte, err error) {
	raw = make([]byte, helloFixedLen, helloFixedLen+maxAdvertise)
	if _, err := io.ReadFull(r, raw); err != nil {
		return h, nil, handshakeReadErr("hello", err)
	}
	if string(raw[:len(protoMagic)]) != protoMagic {
		return h, nil, errors.New("not a limpet mirroring hello: the peer speaks another protocol (plain TCP, or TLS to a psk node)")
	}
	p := raw[len(protoMagic):]
	if p[0] != protoVersion {
		return h, nil, fmt.Errorf("peer speaks protocol version %d, this node %d", p[0], protoVersion)
	}
	if p[1] != auth {
		return h, nil, fmt.Errorf("peer authenticates with %s, this node with %s", authName(p[1]), authName(auth))
	}
	h.auth = p[1]
	h.mode = Mode(p[2])
	copy(h.nonce[:], p[3:])
	h.instance = binary.BigEndian.Uint64(p[3+nonceLen:])
	n := int(p[3+nonceLen+8])
	raw = raw[:helloFixedLen+n]
	if _, err := io.ReadFull(r, raw[helloFixedLen:]); err != nil {
		return h, nil, handshakeReadErr("hello", err)
	}
	h.advertise = string(raw[helloFixedLen:])
	return h, raw, nil
}

func authName(a byte) string {
	switch a {
	case authPSK:
		return "a pre-shared key"
	case authTLS:
		return "tls"
	}
	return fmt.Sprintf("unknown method %d", a)
}

func handshakeReadErr(what string, err error) error {
	switch {
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && what == "hello":
		return errors.New("peer closed the connection during the handshake, before its hello was complete (it refused this node, or does not speak psk)")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("peer closed the connection during the handshake (reading its %s)", what)
	case isTimeout(err):
		return fmt.Errorf("handshake timed out reading the peer's %s", what)
	}
	return fmt.Errorf("handshake: reading the peer's %s: %w", what, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func newHello(auth byte, mode Mode, instance uint64, advertise string) (hello, error) {
	h := hello{auth: auth, mode: mode, instance: instance, advertise: advertise}
	if len(advertise) > maxAdvertise {
		return h, fmt.Errorf("advertised address of %d bytes exceeds %d", len(advertise), maxAdvertise)
	}
	_, err := rand.Read(h.nonce[:])
	return h, err
}

// transcript hashes both hellos, dialer's first.
func transcript(dialer, acceptor []byte) []byte {
	h := sha256.New()
	h.Write([]byte(labelTranscript))
	var l [4]byte
	for _, b := range [][]byte{dialer, acceptor} {
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	return h.Sum(nil)
}

func proof(psk []byte, label string, th []byte) []byte {
	m := hmac.New(sha256.New, psk)
	m.Write([]byte(label))
	m.Write(th)
	return m.Sum(nil)
}

func sessionAEAD(psk, th []byte, label string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, psk, th, label, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// handshakePSK authenticates both ends with the pre-shared key:
//
//	dialer   -> acceptor  hello_D
//	acceptor -> dialer    hello_A
//	dialer   -> acceptor  HMAC(psk, "…dialer proof" | T)
//	acceptor -> dialer    u8 verdict; when 0 (accepted): HMAC(psk, "…acceptor proof" | T)
//
// where T = SHA-256 over both hellos. Each side thus proves the key over
// both fresh nonces, bound to its direction. Session keys (AES-256-GCM,
// one per direction) are HKDF-SHA256(psk, salt T, label).
func handshakePSK(conn net.Conn, br *bufio.Reader, psk []byte, local hello, dialer bool) (hello, *frameConn, error) {
	mine := local.marshal()
	var theirs []byte
	var remote hello
	var err error
	if dialer {
		if _, err := conn.Write(mine); err != nil {
			return remote, nil, fmt.Errorf("handshake: send hello: %w", err)
		}
		if remote, theirs, err = readHello(br, authPSK); err != nil {
			return remote, nil, err
		}
	} else {
		if remote, theirs, err = readHello(br, authPSK); err != nil {
			return remote, nil, err
		}
		if _, err := conn.Write(mine); err != nil {
			return remote, nil, fmt.Errorf("handshake: send hello: %w", err)
		}
	}
	var th []byte
	if dialer {
		th = transcript(mine, theirs)
	} else {
		th = transcript(theirs, mine)
	}
	got := make([]byte, proofLen)
	if dialer {
		if _, err := conn.Write(proof(psk, labelDialer, th)); err != nil {
			return remote, nil, fmt.Errorf("handshake: send proof: %w", err)
		}
		var verdict [1]byte
		if _, err := io.ReadFull(br, verdict[:]); err != nil {
			return remote, nil, handshakeReadErr("verdict", err)
		}
		if verdict[0] != verdictAccept {
			return remote, nil, errors.New("peer refused this node's pre-shared key (the keys differ)")
		}
		if _, err := io.ReadFull(br, got); err != nil {
			return remote, nil, handshakeReadErr("proof", err)
		}
		if subtle.ConstantTimeCompare(got, proof(psk, labelAcceptor, th)) != 1 {
			return remote, nil, errors.New("peer failed to prove the pre-shared key (wrong key)")
		}
	} else {
		if _, err := io.ReadFull(br, got); err != nil {
			return remote, nil, handshakeReadErr("proof", err)
		}
		if subtle.ConstantTimeCompare(got, proof(psk, labelDialer, th)) != 1 {
			conn.Write([]byte{verdictRefuse})
			return remote, nil, errors.New("peer failed to prove the pre-shared key (wrong key)")
		}
		if _, err := conn.Write(append([]byte{verdictAccept}, proof(psk, labelAcceptor, th)...)); err != nil {
			return remote, nil, fmt.Errorf("handshake: send proof: %w", err)
		}
	}
	d2a, err := sessionAEAD(psk, th, labelKeyD2A)
	if err != nil {
		return remote, nil, err
	}
	a2d, err := sessionAEAD(psk, th, labelKeyA2D)
	if err != nil {
		return remote, nil, err
	}
	fc := newFrameConn(conn, br)
	if dialer {
		fc.seal, fc.open = d2a, a2d
	} else {
		fc.seal, fc.open = a2d, d2a
	}
	return remote, fc, nil
}

// tlsConfig is mutual TLS 1.3: each side presents its certificate and
// accepts only a peer whose certificate the shared CA signed. Host names are
// not checked: the CA is the trust boundary, so it should sign mirroring
// peers only.
func tlsConfig(a *TLSAuth, server bool) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{a.Certificate},
	}
	if server {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = a.CA
		return c
	}
	// The client verifies the chain itself (VerifyConnection) because peers
	// are dialed by address, which certificates need not name.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: a.CA, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		return nil
	}
	return c
}

// handshakeTLS runs the TLS handshake, then exchanges hellos inside it.
func handshakeTLS(ctx context.Context, conn net.Conn, a *TLSAuth, local hello, dialer bool) (hello, *frameConn, error) {
	var tc *tls.Conn
	if dialer {
		tc = tls.Client(conn, tlsConfig(a, false))
	} else {
		tc = tls.Server(conn, tlsConfig(a, true))
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return hello{}, nil, fmt.Errorf("tls handshake: %w", err)
	}
	br := bufio.NewReaderSize(tc, 64<<10)
	var remote hello
	var err error
	if !dialer {
		if remote, _, err = readHello(br, authTLS); err != nil {
			return remote, nil, err
		}
	}
	if _, err := tc.Write(local.marshal()); err != nil {
		return remote, nil, fmt.Errorf("handshake: send hello: %w", err)
	}
	if dialer {
		if remote, _, err = readHello(br, authTLS); err != nil {
			return remote, nil, err
		}
	}
	return remote, newFrameConn(tc, br), nil
}

// frameConn reads and writes frames: u32 length | payload, where in PSK
// mode the payload is sealed with AES-256-GCM under the direction's key,
// with the frame's sequence number (implicit, from 0) as nonce and the
// length as additional data. A replayed, reordered, dropped, truncated or
// altered frame therefore fails to open. In TLS mode the payload is plain
// and TLS protects it.
type frameConn struct {
	conn       net.Conn
	br         *bufio.Reader
	bw         *bufio.Writer
	seal, open cipher.AEAD
	sseq, rseq uint64
	rbuf, wbuf []byte
	whdr, rhdr [frameHeaderLen]byte
}

func newFrameConn(conn net.Conn, br *bufio.Reader) *frameConn {
	return &frameConn{conn: conn, br: br, bw: bufio.NewWriterSize(conn, 64<<10)}
}

func gcmNonce(seq uint64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], seq)
	return n[:]
}

func (f *frameConn) overhead() int {
	if f.seal != nil {
		return gcmTagLen
	}
	return 0
}

// write buffers one frame; flush sends it.
func (f *frameConn) write(payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxFrameSize {
		return fmt.Errorf("refusing to send a frame of %d bytes", len(payload))
	}
	binary.BigEndian.PutUint32(f.whdr[:], uint32(len(payload)+f.overhead()))
	if f.seal != nil {
		f.wbuf = f.seal.Seal(f.wbuf[:0], gcmNonce(f.sseq), payload, f.whdr[:])
		f.sseq++
		payload = f.wbuf
	}
	if _, err := f.bw.Write(f.whdr[:]); err != nil {
		return err
	}
	_, err := f.bw.Write(payload)
	return err
}

func (f *frameConn) flush() error { return f.bw.Flush() }

// frameError is a broken frame: the connection cannot go on.
type frameError struct{ msg string }

func (e *frameError) Error() string { return e.msg }

// read returns the next frame's payload, valid until the next read.
func (f *frameConn) read() ([]byte, error) {
	if _, err := io.ReadFull(f.br, f.rhdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &frameError{"truncated frame header"}
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(f.rhdr[:]))
	switch {
	case n <= f.overhead():
		return nil, &frameError{fmt.Sprintf("frame of %d bytes is too short", n)}
	case n > MaxFrameSize+f.overhead():
		return nil, &frameError{fmt.Sprintf("frame of %d bytes exceeds the maximum of %d", n, MaxFrameSize+f.overhead())}
	}
	if cap(f.rbuf) < n {
		f.rbuf = make([]byte, n)
	}
	b := f.rbuf[:n]
	if got, err := io.ReadFull(f.br, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &frameError{fmt.Sprintf("truncated frame: the connection closed after %d of %d bytes", got, n)}
		}
		return nil, err
	}
	if f.open == nil {
		return b, nil
	}
	p, err := f.open.Open(b[:0], gcmNonce(f.rseq), b, f.rhdr[:])
	if err != nil {
		return nil, &frameError{fmt.Sprintf("frame %d failed authentication: forged, altered, replayed or reordered", f.rseq)}
	}
	f.rseq++
	return p, nil
}
