package mirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Message types, the first byte of every frame's payload.
const (
	msgEntries   byte = 1 // u16 count, then count entries
	msgSyncBegin byte = 2 // empty: a bulk sync follows
	msgSyncEnd   byte = 3 // u64 number of entries the bulk sync held
	msgHeartbeat byte = 4 // i64 sender's wall clock, Unix nanoseconds
	msgGoodbye   byte = 5 // u8 length, then a reason the sender closes the connection
)

// MaxFrameSize is the largest payload of one frame. A peer that announces a
// bigger frame is cut off before anything is allocated.
const MaxFrameSize = 1 << 20

// entriesTarget is the payload size at which the sender starts a new
// entries frame; one entry is at most a few kilobytes, so a frame stays far
// below MaxFrameSize.
const entriesTarget = 32 << 10

// maxEntriesPerFrame fits the u16 count of an entries frame.
const maxEntriesPerFrame = 1<<16 - 1

// maxReasonLen bounds a goodbye's reason.
const maxReasonLen = 255

// message is one decoded frame payload.
type message struct {
	typ     byte
	entries []Entry   // msgEntries
	count   uint64    // msgSyncEnd
	at      time.Time // msgHeartbeat
	reason  string    // msgGoodbye
}

var errMalformed = errors.New("malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// Address families on the wire.
const (
	famNone byte = 0
	famIPv4 byte = 4
	famIPv6 byte = 6
)

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case !a.IsValid():
		return append(b, famNone)
	case a.Is4():
		v := a.As4()
		return append(append(b, famIPv4), v[:]...)
	default:
		v := a.As16()
		return append(append(b, famIPv6), v[:]...)
	}
}

func appendTime(b []byte, t time.Time) []byte {
	var n int64
	if !t.IsZero() {
		n = t.UnixNano()
	}
	return binary.BigEndian.AppendUint64(b, uint64(n))
}

// appendEntry encodes e, which must be valid (Entry.Validate):
//
//	u8 op | u8 table length | table | uvarint key length | key |
//	client: u8 family (0, 4, 6) | 0, 4 or 16 bytes |
//	server: u8 family | 0, 4 or 16 bytes | u16 port when family != 0 |
//	i64 created | i64 updated (Unix nanoseconds, 0 for the zero time)
func appendEntry(b []byte, e *Entry) []byte {
	b = append(b, byte(e.Op), byte(len(e.Table)))
	b = append(b, e.Table...)
	b = binary.AppendUvarint(b, uint64(len(e.Key)))
	b = append(b, e.Key...)
	b = appendAddr(b, e.Client)
	b = appendAddr(b, e.Server.Addr())
	if e.Server.Addr().IsValid() {
		b = binary.BigEndian.AppendUint16(b, e.Server.Port())
	}
	b = appendTime(b, e.Created)
	return appendTime(b, e.Updated)
}

// entriesFrame builds one msgEntries payload at a time.
type entriesFrame struct {
	buf []byte
	n   int
}

func (f *entriesFrame) reset() {
	f.buf = append(f.buf[:0], msgEntries, 0, 0)
	f.n = 0
}

func (f *entriesFrame) add(e *Entry) {
	f.buf = appendEntry(f.buf, e)
	f.n++
	binary.BigEndian.PutUint16(f.buf[1:3], uint16(f.n))
}

func (f *entriesFrame) full() bool { return len(f.buf) >= entriesTarget || f.n >= maxEntriesPerFrame }

func encodeEntries(b []byte, entries []Entry) []byte {
	b = append(b, msgEntries)
	b = binary.BigEndian.AppendUint16(b, uint16(len(entries)))
	for i := range entries {
		b = appendEntry(b, &entries[i])
	}
	return b
}

func encodeSyncBegin(b []byte) []byte { return append(b, msgSyncBegin) }

func encodeSyncEnd(b []byte, count uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, msgSyncEnd), count)
}

func encodeHeartbeat(b []byte, at time.Time) []byte { return appendTime(append(b, msgHeartbeat), at) }

func encodeGoodbye(b []byte, reason string) []byte {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	b = append(b, msgGoodbye, byte(len(reason)))
	return append(b, reason...)
}

// reader walks a payload; the first problem sticks and later reads return
// zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = malformed(format, args...)
	}
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("truncated %s: need %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) byte {
	if v := r.bytes(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16(what string) uint16 {
	if v := r.bytes(2, what); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u64(what string) uint64 {
	if v := r.bytes(8, what); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) time(what string) time.Time {
	n := int64(r.u64(what))
	if r.err != nil || n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (r *reader) addr(what string) netip.Addr {
	switch fam := r.u8(what + " family"); fam {
	case famNone:
		return netip.Addr{}
	case famIPv4:
		if v := r.bytes(4, what); v != nil {
			return netip.AddrFrom4([4]byte(v))
		}
	case famIPv6:
		if v := r.bytes(16, what); v != nil {
			return netip.AddrFrom16([16]byte(v))
		}
	default:
		r.fail("unknown %s family %d", what, fam)
	}
	return netip.Addr{}
}

func (r *reader) entry(e *Entry) {
	*e = Entry{}
	e.Op = Op(r.u8("op"))
	e.Table = string(r.bytes(int(r.u8("table length")), "table"))
	kl := r.uvarint("key length")
	if kl > MaxKeyLen {
		r.fail("key of %d bytes exceeds %d", kl, MaxKeyLen)
		return
	}
	e.Key = string(r.bytes(int(kl), "key"))
	e.Client = r.addr("client")
	if srv := r.addr("server"); srv.IsValid() {
		e.Server = netip.AddrPortFrom(srv, r.u16("server port"))
	}
	e.Created = r.time("created")
	e.Updated = r.time("updated")
	if r.err == nil {
		if err := e.Validate(); err != nil {
			r.fail("%v", err)
		}
	}
}

// decodeMessage decodes one frame payload. Entries are decoded into
// scratch's backing array when it is big enough. Anything but exactly one
// well-formed message of a known type is an error.
func decodeMessage(b []byte, scratch []Entry) (message, error) {
	if len(b) == 0 {
		return message{}, malformed("empty frame")
	}
	m := message{typ: b[0]}
	r := &reader{b: b[1:]}
	switch m.typ {
	case msgEntries:
		n := int(r.u16("entry count"))
		// Every entry takes at least 1+1+1+1+1+8+8 bytes (a bare delete),
		// so a count the payload cannot hold is refused before allocating.
		if r.err == nil && n*21 > len(r.b) {
			r.fail("%d entries cannot fit in %d bytes", n, len(r.b))
		}
		if r.err == nil {
			if cap(scratch) >= n {
				m.entries = scratch[:n]
			} else {
				m.entries = make([]Entry, n)
			}
			for i := 0; i < n && r.err == nil; i++ {
				r.entry(&m.entries[i])
			}
		}
	case msgSyncBegin:
	case msgSyncEnd:
		m.count = r.u64("sync count")
	case msgHeartbeat:
		m.at = r.time("heartbeat time")
	case msgGoodbye:
		m.reason = string(r.bytes(int(r.u8("reason length")), "reason"))
	default:
		return message{}, malformed("unknown message type %d", m.typ)
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes after message type %d", len(r.b), m.typ)
	}
	if r.err != nil {
		return message{}, r.err
	}
	return m, nil
}
