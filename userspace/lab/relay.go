package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Encap is how an encapsulating relay wraps the client's packets.
type Encap string

// The encapsulations of StartEncapRelay.
const (
	EncapIPIP Encap = "ipip" // IPPROTO_IPIP / IPPROTO_IPV6 in the outer IP header
	EncapGUE  Encap = "gue"  // UDP to the GUE port, then a GUE header (variant 0) or none (variant 1)
)

// RelaySpec configures StartEncapRelay.
type RelaySpec struct {
	Encap Encap
	// OuterV6 tunnels to the members' IPv6 addresses; by default to
	// their IPv4 ones (so an IPv6 client packet travels IPv6-in-IPv4).
	OuterV6 bool
	// GUEPort is the members' GUE port (0: 6080); GUEVariant 0 sends the
	// 4-byte GUE header, 1 sends the inner IP header right after UDP.
	GUEPort    uint16
	GUEVariant int
	// Members are the member names flows are spread over, by a hash of
	// the inner 5-tuple (empty: every member).
	Members []string
}

// Relay is a userspace encapsulating balancer in the balancer host of a
// routed lab: the VIPs are routed into a TUN device, and every packet read
// from it is sent to a member inside an outer header built by the kernel
// (a raw IP socket of protocol 4 or 41, or a UDP socket for GUE). It stands
// in for the XDP datapath's encapsulation, so that members, their
// decapsulator and the routed topology can be tested with real clients.
type Relay struct {
	spec    RelaySpec
	lab     *Lab
	tun     *os.File
	members []Member
	send    map[byte]func(dst netip.Addr, pkt []byte) error // by inner IP version
	closers []interface{ Close() error }

	relayed atomic.Uint64
	errs    atomic.Uint64
	lastErr atomic.Value // error
	done    chan struct{}
	once    sync.Once
}

// tunnelOverhead is what the outer headers add to a packet.
func (s RelaySpec) tunnelOverhead() int {
	n := 20
	if s.OuterV6 {
		n = 40
	}
	if s.Encap == EncapGUE {
		n += 8
		if s.GUEVariant == 0 {
			n += 4
		}
	}
	return n
}

// StartEncapRelay starts an encapsulating relay in the balancer of a
// routed lab (Spec.Routed). Close stops it (Lab.Close does too); the VIPs
// are then unreachable again.
func (l *Lab) StartEncapRelay(spec RelaySpec) (*Relay, error) {
	if !l.spec.Routed {
		return nil, errors.New("lab: an encapsulating relay needs a routed lab (Spec.Routed)")
	}
	switch spec.Encap {
	case EncapIPIP, EncapGUE:
	default:
		return nil, fmt.Errorf("lab: relay encapsulation %q: want ipip or gue", spec.Encap)
	}
	if spec.GUEVariant != 0 && spec.GUEVariant != 1 {
		return nil, fmt.Errorf("lab: GUE variant %d: want 0 or 1", spec.GUEVariant)
	}
	if spec.GUEPort == 0 {
		spec.GUEPort = 6080
	}
	r := &Relay{spec: spec, lab: l, send: map[byte]func(netip.Addr, []byte) error{}, done: make(chan struct{})}
	if len(spec.Members) == 0 {
		r.members = l.Members()
	}
	for _, name := range spec.Members {
		m, ok := l.Member(name)
		if !ok {
			return nil, fmt.Errorf("lab: relay: no member %q", name)
		}
		r.members = append(r.members, m)
	}
	lb := l.hosts[HostBalancer]
	name := l.ifname("tun")
	err := lb.run(func() error {
		if err := r.openTun(name); err != nil {
			return err
		}
		return r.openSockets()
	})
	if err == nil {
		err = r.route(lb, name)
	}
	if err != nil {
		r.closeAll()
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		r.closeAll()
		return nil, errors.New("lab: closed")
	}
	l.relays = append(l.relays, r)
	l.mu.Unlock()
	go r.loop()
	return r, nil
}

// openTun creates the TUN device (in the calling thread's namespace). It
// goes when its file is closed. The file is non-blocking, so that Close
// ends a pending Read.
func (r *Relay) openTun(name string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("lab: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("lab: create TUN %s: %w", name, err)
	}
	r.tun = os.NewFile(uintptr(fd), name)
	return nil
}

func (r *Relay) openSockets() error {
	outerNet := "ip4"
	udpNet := "udp4"
	if r.spec.OuterV6 {
		outerNet, udpNet = "ip6", "udp6"
	}
	if r.spec.Encap == EncapGUE {
		c, err := net.ListenUDP(udpNet, nil)
		if err != nil {
			return fmt.Errorf("lab: relay: %w", err)
		}
		r.closers = append(r.closers, c)
		for _, ver := range []byte{4, 6} {
			proto := byte(4)
			if ver == 6 {
				proto = 41
			}
			r.send[ver] = func(dst netip.Addr, pkt []byte) error {
				b := pkt
				if r.spec.GUEVariant == 0 {
					b = append([]byte{0, proto, 0, 0}, pkt...)
				}
				_, err := c.WriteToUDPAddrPort(b, netip.AddrPortFrom(dst, r.spec.GUEPort))
				return err
			}
		}
		return nil
	}
	for ver, proto := range map[byte]int{4: unix.IPPROTO_IPIP, 6: unix.IPPROTO_IPV6} {
		c, err := net.ListenIP(fmt.Sprintf("%s:%d", outerNet, proto), nil)
		if err != nil {
			return fmt.Errorf("lab: relay: raw socket of protocol %d: %w", proto, err)
		}
		r.closers = append(r.closers, c)
		r.send[ver] = func(dst netip.Addr, pkt []byte) error {
			_, err := c.WriteToIP(pkt, &net.IPAddr{IP: dst.AsSlice()})
			return err
		}
	}
	return nil
}

// route brings the TUN up with the MTU the tunnel leaves (so that the
// balancer's stack answers larger packets with frag-needed / packet too
// big, as a tunnel must) and routes the VIPs into it.
func (r *Relay) route(lb *host, name string) error {
	lk, err := lb.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("lab: %s: %w", name, err)
	}
	if err := lb.nl.LinkSetMTU(lk, 1500-r.spec.tunnelOverhead()); err != nil {
		return fmt.Errorf("lab: %s mtu: %w", name, err)
	}
	if err := lb.nl.LinkSetUp(lk); err != nil {
		return fmt.Errorf("lab: %s up: %w", name, err)
	}
	for _, v := range r.lab.spec.VIPs {
		rt := &netlink.Route{LinkIndex: lk.Attrs().Index, Dst: ipnet(v, v.BitLen()), Scope: netlink.SCOPE_LINK}
		if err := lb.nl.RouteReplace(rt); err != nil {
			return fmt.Errorf("lab: route %s into %s: %w", v, name, err)
		}
	}
	return nil
}

func (r *Relay) loop() {
	defer close(r.done)
	buf := make([]byte, 65536)
	for {
		n, err := r.tun.Read(buf)
		if err != nil {
			return // closed
		}
		pkt := buf[:n]
		if n < 1 {
			continue
		}
		ver := pkt[0] >> 4
		send := r.send[ver]
		if send == nil {
			continue
		}
		m := r.members[flowHash(pkt)%uint32(len(r.members))]
		dst := m.Addr4
		if r.spec.OuterV6 {
			dst = m.Addr6
		}
		if err := send(dst, pkt); err != nil {
			r.errs.Add(1)
			r.lastErr.Store(err)
			continue
		}
		r.relayed.Add(1)
	}
}

// flowHash hashes an IP packet's addresses, protocol and (TCP or UDP)
// ports, so that every packet of a flow goes to the same member.
func flowHash(pkt []byte) uint32 {
	h := fnv.New32a()
	var proto byte
	var l4 []byte
	switch {
	case pkt[0]>>4 == 4 && len(pkt) >= 20:
		ihl := int(pkt[0]&0x0f) * 4
		h.Write(pkt[12:20])
		proto = pkt[9]
		if len(pkt) >= ihl+4 && binary.BigEndian.Uint16(pkt[6:])&0x1fff == 0 {
			l4 = pkt[ihl : ihl+4]
		}
	case pkt[0]>>4 == 6 && len(pkt) >= 40:
		h.Write(pkt[8:40])
		proto = pkt[6]
		if len(pkt) >= 44 {
			l4 = pkt[40:44]
		}
	}
	h.Write([]byte{proto})
	if proto == 6 || proto == 17 {
		h.Write(l4)
	}
	return h.Sum32()
}

// Relayed is the number of packets sent to members so far.
func (r *Relay) Relayed() uint64 { return r.relayed.Load() }

// Errors is the number of packets that could not be sent, and the last
// error.
func (r *Relay) Errors() (uint64, error) {
	err, _ := r.lastErr.Load().(error)
	return r.errs.Load(), err
}

func (r *Relay) closeAll() {
	if r.tun != nil {
		r.tun.Close()
	}
	for _, c := range r.closers {
		c.Close()
	}
}

// Close stops the relay and removes its TUN device (and with it the VIP
// routes); the balancer answers the VIPs "unreachable" again.
func (r *Relay) Close() error {
	var err error
	r.once.Do(func() {
		r.closeAll()
		<-r.done
		lb := r.lab.hosts[HostBalancer]
		if r.lab.isClosed() {
			return
		}
		for _, v := range r.lab.spec.VIPs {
			rt := &netlink.Route{Dst: ipnet(v, v.BitLen()), Type: unix.RTN_UNREACHABLE}
			if e := lb.nl.RouteReplace(rt); e != nil {
				err = errors.Join(err, fmt.Errorf("lab: unreachable route %s: %w", v, e))
			}
		}
	})
	return err
}
