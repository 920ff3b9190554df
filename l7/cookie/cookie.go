// Package cookie seals and opens limpet's HTTP persistence cookies.
//
// A cookie value is base64url (no padding) of
//
//	version (1 byte) | nonce (12 bytes) | AES-256-GCM(plaintext) with tag (16 bytes)
//
// and the plaintext is
//
//	address length (1 byte: 4 or 16) | address | port (2 bytes, big endian) |
//	issue time (8 bytes, Unix seconds, big endian) |
//	virtual server name length (1 byte) | virtual server name
//
// The version byte is authenticated as additional data. The first key of a
// Codec seals; every key opens, so keys can rotate: add the new key first,
// wait for the longest cookie lifetime, then drop the old one.
//
// The package depends only on the standard library so that the operator
// CLI can use it without pulling in the proxy. Key files and cookie names
// are the config's (config.LoadKeyFile, config.ValidName).
package cookie

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unsafe"
)

// Version is the format version written by Seal.
const Version byte = 1

// KeySize is the size of an AES-256 key.
const KeySize = 32

// MaxKeys bounds the key list: Open tries every key, so the list must stay short.
const MaxKeys = 16

// MaxVirtualServerName is the longest virtual server name a cookie can carry.
const MaxVirtualServerName = 255

const (
	nonceSize = 12
	tagSize   = 16
	// header is what precedes the ciphertext.
	header = 1 + nonceSize
	// minPlain is the smallest valid plaintext: IPv4, port, time, empty name.
	minPlain = 1 + 4 + 2 + 8 + 1
	maxPlain = 1 + 16 + 2 + 8 + 1 + MaxVirtualServerName
	// MaxEncodedLen is the longest value Seal produces; Open rejects anything
	// longer before decoding it.
	MaxEncodedLen = (header + maxPlain + tagSize + 2) / 3 * 4
)

var enc = base64.RawURLEncoding.Strict()

// Errors returned by Open. ErrEncoding, ErrTruncated, ErrVersion and
// ErrAuthentication all mean the value was not sealed by one of our keys as
// it stands: the proxy treats them alike ("tampered") but logs the reason.
var (
	ErrEncoding       = errors.New("cookie value is not base64url")
	ErrTruncated      = errors.New("cookie value is too short")
	ErrTooLong        = errors.New("cookie value is too long")
	ErrVersion        = errors.New("cookie format version is unknown")
	ErrAuthentication = errors.New("cookie does not authenticate under any key (tampered, or sealed with a key no longer configured)")
	ErrPayload        = errors.New("cookie payload is malformed")
)

// Payload is what a cookie carries.
type Payload struct {
	// Member is the address and port of the pool member the client is pinned to.
	Member netip.AddrPort
	// Issued is when limpet created the cookie, to the second. The profile's
	// timeout runs from here, whatever Max-Age the client was given.
	Issued time.Time
	// VirtualServer names the virtual server that issued the cookie.
	VirtualServer string
}

// Codec seals with its first key and opens with any of its keys.
type Codec struct {
	aeads []cipher.AEAD
}

// NewCodec builds a codec from 1 to MaxKeys keys of KeySize bytes each.
func NewCodec(keys [][]byte) (*Codec, error) {
	if len(keys) == 0 {
		return nil, errors.New("at least one key is required")
	}
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("%d keys exceed the limit of %d", len(keys), MaxKeys)
	}
	c := &Codec{}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("key %d is %d bytes; AES-256 needs %d", i, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		c.aeads = append(c.aeads, aead)
	}
	return c, nil
}

// Seal encodes and encrypts p under the first key.
func (c *Codec) Seal(p Payload) (string, error) {
	var s Scratch
	b, err := c.AppendSeal(nil, &s, p)
	return string(b), err
}

// maxRaw is the longest decoded cookie: header, plaintext and tag.
const maxRaw = header + maxPlain + tagSize

// Scratch is the working space of AppendSeal and OpenTo, so that a caller
// that keeps one (per request, pooled) seals and opens without allocating.
type Scratch struct {
	raw   [maxRaw + 3]byte // decoded value; 3 bytes of slack for base64 padding
	plain [maxPlain]byte
}

// AppendSeal seals p under the first key and appends the cookie value
// (base64url) to dst.
func (c *Codec) AppendSeal(dst []byte, s *Scratch, p Payload) ([]byte, error) {
	pt, err := marshalTo(s.plain[:0], p)
	if err != nil {
		return dst, err
	}
	buf := s.raw[:header]
	buf[0] = Version
	if _, err := rand.Read(buf[1:header]); err != nil {
		return dst, fmt.Errorf("cookie nonce: %w", err)
	}
	buf = c.aeads[0].Seal(buf, buf[1:header], pt, buf[:1])
	return enc.AppendEncode(dst, buf), nil
}

// Open decodes, authenticates and parses a cookie value. It returns the
// index of the key that opened it (0 is the sealing key).
func (c *Codec) Open(value string) (Payload, int, error) {
	var s Scratch
	v, i, err := c.OpenTo(&s, value)
	if err != nil {
		return Payload{}, i, err
	}
	return Payload{Member: v.Member, Issued: v.Issued(), VirtualServer: string(v.VirtualServer)}, i, nil
}

// View is an opened cookie whose VirtualServer is read in place from the
// Scratch it was opened in: valid until the Scratch is used again.
type View struct {
	Member        netip.AddrPort
	IssuedUnix    int64
	VirtualServer []byte
}

// Issued is when the cookie was sealed, to the second, in UTC.
func (v View) Issued() time.Time { return time.Unix(v.IssuedUnix, 0).UTC() }

// OpenTo is Open without allocating: it decodes and decrypts in s.
func (c *Codec) OpenTo(s *Scratch, value string) (View, int, error) {
	if len(value) > MaxEncodedLen {
		return View{}, -1, ErrTooLong
	}
	// The decoder only reads its input: it may see the string's bytes.
	n, err := enc.Decode(s.raw[:], unsafe.Slice(unsafe.StringData(value), len(value)))
	if err != nil {
		return View{}, -1, ErrEncoding
	}
	raw := s.raw[:n]
	if len(raw) < header+minPlain+tagSize {
		return View{}, -1, ErrTruncated
	}
	if raw[0] != Version {
		return View{}, -1, ErrVersion
	}
	nonce, sealed := raw[1:header], raw[header:]
	for i, aead := range c.aeads {
		// In place: on failure the ciphertext is left as it was (GCM
		// authenticates before it decrypts), so the next key sees it whole.
		pt, err := aead.Open(s.plain[:0], nonce, sealed, raw[:1])
		if err != nil {
			continue
		}
		v, err := unmarshalView(pt)
		if err != nil {
			return View{}, i, err
		}
		return v, i, nil
	}
	return View{}, -1, ErrAuthentication
}

func marshalTo(b []byte, p Payload) ([]byte, error) {
	if !p.Member.IsValid() {
		return nil, errors.New("cookie payload needs a member address")
	}
	if len(p.VirtualServer) > MaxVirtualServerName {
		return nil, fmt.Errorf("virtual server name is longer than %d bytes", MaxVirtualServerName)
	}
	addr := p.Member.Addr().Unmap()
	if addr.Is4() {
		a := addr.As4()
		b = append(b, 4)
		b = append(b, a[:]...)
	} else {
		a := addr.As16()
		b = append(b, 16)
		b = append(b, a[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, p.Member.Port())
	b = binary.BigEndian.AppendUint64(b, uint64(p.Issued.Unix()))
	b = append(b, byte(len(p.VirtualServer)))
	b = append(b, p.VirtualServer...)
	return b, nil
}

func unmarshalView(b []byte) (View, error) {
	if len(b) < minPlain || len(b) > maxPlain {
		return View{}, ErrPayload
	}
	al := int(b[0])
	if al != 4 && al != 16 {
		return View{}, ErrPayload
	}
	if len(b) < 1+al+2+8+1 {
		return View{}, ErrPayload
	}
	addr, _ := netip.AddrFromSlice(b[1 : 1+al])
	b = b[1+al:]
	port := binary.BigEndian.Uint16(b)
	secs := int64(binary.BigEndian.Uint64(b[2:]))
	nl := int(b[10])
	if len(b) != 11+nl {
		return View{}, ErrPayload
	}
	return View{Member: netip.AddrPortFrom(addr, port), IssuedUnix: secs, VirtualServer: b[11:]}, nil
}

// NameLen is the length of a derived cookie name.
const NameLen = 8

// DeriveName returns the eight-letter upper-case cookie name for a key and a
// scope (limpet uses the virtual server or the shared profile). It is an
// HMAC-SHA256 of the scope, so it is the same across restarts and across
// nodes that share the key, and says nothing about the key.
func DeriveName(key []byte, scope string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("limpet cookie name v1\x00"))
	m.Write([]byte(scope))
	sum := m.Sum(nil)
	var b [NameLen]byte
	for i := range b {
		// 256 is not a multiple of 26; the bias (under 0.4%) is harmless
		// for a name that is not a secret.
		b[i] = 'A' + sum[i]%26
	}
	return string(b[:])
}

// Decode opens a value with the given keys, for operators. The value may be
// pasted as VALUE, NAME=VALUE or a whole Set-Cookie or Cookie line.
func Decode(value string, keys [][]byte) (Payload, int, error) {
	c, err := NewCodec(keys)
	if err != nil {
		return Payload{}, -1, err
	}
	return c.Open(ExtractValue(value))
}

// ExtractValue returns the cookie value from VALUE, NAME=VALUE, or a
// "Set-Cookie: NAME=VALUE; Path=/" line (the first pair wins), with
// surrounding quotes removed.
func ExtractValue(s string) string {
	s = strings.TrimSpace(s)
	if rest, ok := cutPrefixFold(s, "set-cookie:"); ok {
		s = rest
	} else if rest, ok := cutPrefixFold(s, "cookie:"); ok {
		s = rest
	}
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
