package model

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// A hand-made IPv4/UDP frame: 14 bytes of Ethernet, 20 of IP, 8 of UDP, 4
// of payload, with correct checksums.
func udpFrame(t *testing.T) []byte {
	t.Helper()
	f := make([]byte, 14+20+8+4)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, ipProtoUDP
	binary.BigEndian.PutUint16(ip[2:], 32)
	copy(ip[12:], []byte{198, 51, 100, 7})
	copy(ip[16:], []byte{203, 0, 113, 10})
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:], 1000)
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], 12)
	copy(u[8:], "ping")
	p, ok, r := parseL3(f)
	if !ok || r != reasonNone || parseL4(&p) != reasonNone {
		t.Fatalf("frame does not parse: %v %v", ok, r)
	}
	binary.BigEndian.PutUint16(ip[10:], ipv4HeaderCsum(f, 14, 20))
	binary.BigEndian.PutUint16(u[6:], l4Csum(f, &p))
	return f
}

func parsed(t *testing.T, f []byte) *packet {
	t.Helper()
	p, _, _ := parseL3(f)
	parseL4(&p)
	return &p
}

func verifies(f []byte, p *packet) (ip, l4 bool) {
	ip = binary.BigEndian.Uint16(f[p.l3+10:]) == ipv4HeaderCsum(f, p.l3, 20)
	got := binary.BigEndian.Uint16(f[p.l4CsumOff():])
	return ip, SameChecksum(CsumUDP, got, l4Csum(f, p))
}

func TestChecksumsCarryTheInputError(t *testing.T) {
	for _, tc := range []struct {
		name           string
		spoil          func([]byte)
		wantIP, wantL4 bool
	}{
		{"right stays right", func([]byte) {}, true, true},
		{"wrong IP header checksum stays wrong", func(f []byte) { f[14+10] ^= 0x5a }, false, true},
		{"wrong UDP checksum stays wrong", func(f []byte) { f[14+20+7] ^= 0x33 }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := udpFrame(t)
			tc.spoil(in)
			p := parsed(t, in)
			errs := checksumErrors(p)
			out := append([]byte(nil), in...)
			copy(out[p.l3+16:], []byte{10, 1, 0, 11}) // NAT to a member
			binary.BigEndian.PutUint16(out[p.l4+2:], 8080)
			out[p.ttlOff()]--
			setChecksums(out, p, errs)
			ip, l4 := verifies(out, p)
			if ip != tc.wantIP || l4 != tc.wantL4 {
				t.Fatalf("after NAT: IP verifies %v (want %v), UDP verifies %v (want %v)", ip, tc.wantIP, l4, tc.wantL4)
			}
			// Wrong by exactly as much as before.
			if !tc.wantL4 {
				before := csumError(binary.BigEndian.Uint16(in[p.l4CsumOff():]), l4Csum(in, p))
				after := csumError(binary.BigEndian.Uint16(out[p.l4CsumOff():]), l4Csum(out, p))
				if before != after {
					t.Fatalf("UDP checksum error %04x became %04x", before, after)
				}
			}
		})
	}
	in := udpFrame(t)
	binary.BigEndian.PutUint16(in[14+20+6:], 0) // no checksum
	p := parsed(t, in)
	out := append([]byte(nil), in...)
	copy(out[p.l3+16:], []byte{10, 1, 0, 11})
	setChecksums(out, p, checksumErrors(p))
	if c := binary.BigEndian.Uint16(out[p.l4CsumOff():]); c != 0 {
		t.Fatalf("a zero UDP checksum became %04x", c)
	}
}

func TestMask(t *testing.T) {
	for _, tc := range []struct {
		in     string
		prefix uint8
		want   string
	}{
		{"198.51.100.77", 24, "198.51.100.0"},
		{"198.51.100.77", 32, "198.51.100.77"},
		{"198.51.100.77", 200, "198.51.100.77"},
		{"198.51.100.77", 0, "0.0.0.0"},
		{"2001:db8:c1:1::7", 48, "2001:db8:c1::"},
		{"2001:db8:c1:1::7", 128, "2001:db8:c1:1::7"},
	} {
		if got := mask(netip.MustParseAddr(tc.in), tc.prefix); got != netip.MustParseAddr(tc.want) {
			t.Errorf("mask(%s, %d) = %s, want %s", tc.in, tc.prefix, got, tc.want)
		}
	}
}

func TestElapsedOverIsUndecidedOnlyWithinTheReadings(t *testing.T) {
	s := time.Second
	then := Instant{10 * s, 10*s + time.Millisecond}
	for _, tc := range []struct {
		now    Instant
		strict bool
		want   tri
	}{
		{Instant{20 * s, 20 * s}, true, no},                                          // exactly 10s - 0..1ms: not over
		{Instant{21 * s, 21 * s}, true, yes},                                         // well over
		{Instant{20*s + time.Millisecond/2, 20*s + time.Millisecond/2}, true, maybe}, // within a reading
		{Instant{15 * s, 15 * s}, false, no},
	} {
		if got := elapsedOver(tc.now, then, 10*s, tc.strict); got != tc.want {
			t.Errorf("elapsedOver(%v, %v, 10s, %v) = %v, want %v", tc.now, then, tc.strict, got, tc.want)
		}
	}
}
