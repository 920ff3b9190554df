package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Neighbour events, as a member's NIC swap and the balancer's neighbour
// table would produce them, for tests of what follows the kernel's
// neighbours (limpet's next-hop cache).

// SetMemberMAC gives the member's own interface a new MAC. The balancer's
// neighbour entries for it are not told: until they are (TellBalancerMAC)
// or re-resolved (ForgetMemberNeighbours), frames to the old MAC are lost,
// as on a real segment after a NIC swap without a gratuitous ARP.
func (l *Lab) SetMemberMAC(name string, mac net.HardwareAddr) error {
	m, ok := l.Member(name)
	if !ok {
		return fmt.Errorf("lab: no member %q", name)
	}
	return l.Run(name, func() error {
		link, err := netlink.LinkByName(m.Iface.Name)
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(link, mac)
	})
}

// TellBalancerMAC points the balancer's neighbour entries for the member's
// addresses at mac, as the member's gratuitous ARP and unsolicited neighbour
// advertisement would.
func (l *Lab) TellBalancerMAC(name string, mac net.HardwareAddr) error {
	m, bi, err := l.memberSide(name)
	if err != nil {
		return err
	}
	return l.Run(l.balancers[0].Host, func() error {
		var errs []error
		for _, a := range []netip.Addr{m.Addr4, m.Addr6} {
			errs = append(errs, netlink.NeighSet(&netlink.Neigh{
				LinkIndex: bi.Index, Family: family(a), State: netlink.NUD_REACHABLE, IP: a.AsSlice(), HardwareAddr: mac,
			}))
		}
		return errors.Join(errs...)
	})
}

// ForgetMemberNeighbours deletes the balancer's neighbour entries for the
// member's addresses (ip neigh del), so the kernel resolves them afresh.
func (l *Lab) ForgetMemberNeighbours(name string) error {
	m, bi, err := l.memberSide(name)
	if err != nil {
		return err
	}
	return l.Run(l.balancers[0].Host, func() error {
		for _, a := range []netip.Addr{m.Addr4, m.Addr6} {
			err := netlink.NeighDel(&netlink.Neigh{LinkIndex: bi.Index, Family: family(a), IP: a.AsSlice()})
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("lab: delete neighbour %s: %w", a, err)
			}
		}
		return nil
	})
}

// SetMemberRouteMTU routes the member's addresses, on the balancer, through
// a host route of the given MTU on the member's link (0: remove it). The
// MTU is locked (ip route ... mtu lock N): a router holds forwarded IPv4
// packets to a route's MTU only then.
func (l *Lab) SetMemberRouteMTU(name string, mtu int) error {
	m, bi, err := l.memberSide(name)
	if err != nil {
		return err
	}
	return l.Run(l.balancers[0].Host, func() error {
		for _, a := range []netip.Addr{m.Addr4, m.Addr6} {
			r := &netlink.Route{LinkIndex: bi.Index, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}, MTU: mtu, MTULock: true}
			if mtu == 0 {
				if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("lab: delete route to %s: %w", a, err)
				}
				continue
			}
			if err := netlink.RouteReplace(r); err != nil {
				return fmt.Errorf("lab: route to %s: %w", a, err)
			}
		}
		return nil
	})
}

func (l *Lab) memberSide(name string) (Member, Iface, error) {
	mem, ok := l.Member(name)
	if !ok {
		return Member{}, Iface{}, fmt.Errorf("lab: no member %q", name)
	}
	if mem.BalancerIface.Index == 0 {
		return Member{}, Iface{}, fmt.Errorf("lab: member %q has no balancer interface of its own (HA topology)", name)
	}
	return mem, mem.BalancerIface, nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// FrameCounter counts the frames that arrive at an interface, by
// destination MAC, whatever the interface's own MAC: frames to a MAC the
// interface no longer has are counted, then dropped by the kernel.
type FrameCounter struct {
	fd     int
	mu     sync.Mutex
	counts map[string]uint64
	done   chan struct{}
}

// CountFrames starts counting the frames arriving at iface in host. Close
// stops it.
func (l *Lab) CountFrames(host, iface string) (*FrameCounter, error) {
	var fd int
	err := l.Run(host, func() error {
		link, err := netlink.LinkByName(iface)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: link.Attrs().Index}); err != nil {
			unix.Close(fd)
			return err
		}
		mr := unix.PacketMreq{Ifindex: int32(link.Attrs().Index), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
			unix.Close(fd)
			return err
		}
		// Wake the reader now and then, so Close is not left waiting.
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	})
	if err != nil {
		return nil, fmt.Errorf("lab: count frames on %s in %s: %w", iface, host, err)
	}
	c := &FrameCounter{fd: fd, counts: map[string]uint64{}, done: make(chan struct{})}
	go c.read()
	return c, nil
}

func (c *FrameCounter) read() {
	defer close(c.done)
	buf := make([]byte, 128)
	for {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // closed
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n < 6 {
			continue
		}
		c.mu.Lock()
		c.counts[net.HardwareAddr(buf[:6]).String()]++
		c.mu.Unlock()
	}
}

// Count is how many frames to mac have arrived so far.
func (c *FrameCounter) Count(mac net.HardwareAddr) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[mac.String()]
}

// Close stops counting.
func (c *FrameCounter) Close() {
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	unix.Close(c.fd)
	<-c.done
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
