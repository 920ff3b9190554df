// Package lab builds a throw-away network lab out of Linux network
// namespaces and veth pairs, for limpet's integration tests and demo.
//
// A lab has one client host, one balancer host (or more, for HA tests) and N
// member hosts. Every host is a named network namespace under /run/netns
// whose name starts with NSPrefix and ends with the lab's random suffix, e.g.
// "lmp-client-3fa9c1", "lmp-lb-3fa9c1", "lmp-m1-3fa9c1", so that parallel
// labs never collide and Clean can find what a crashed run left behind.
//
// Topology with one balancer (the default):
//
//	client ──veth── lb ──veth── m1
//	                   ──veth── m2 ...
//
// With Spec.Balancers > 1 a switch host ("sw") holds two bridges: the client
// segment (client and every balancer) and the member segment (every balancer
// and every member):
//
//	client ─┐            ┌─ lb  ─┐            ┌─ m1
//	        └─ sw:brc ───┴─ lb1 ─┴─ sw:brm ───┴─ m2 ...
//
// With Spec.Routed, members sit on subnets of their own behind a router
// host, and the balancer is one-armed on yet another (see routed.go):
//
//	client ── router ── lb
//	                 ── m1, m2 ...
//
// Addressing (namespaces are private, so the ranges never leak; they are
// benchmarking (198.18.0.0/15) and ULA (fd00:1e::/48) ranges on purpose). The
// IPv6 address of a host reuses the decimal digits of its IPv4 address:
// 198.18.16.2 <-> fd00:1e:0:16::2.
//
//	client segment   198.18.0.0/24, fd00:1e::/64: client .1/::1, balancer i .(2+i)/::(2+i)
//	client sources   198.19.0.0/16 and fd00:1e:1::/64, routed as local ("AnyIP") on the
//	                 client, so every address in them is a usable source; the k-th
//	                 (k>=1) is 198.19.(k/256).(k%256) and fd00:1e:1::(k/256):(k%256)
//	VIPs (default)   198.18.100.10 and fd00:1e:0:100::10
//	members (1 lb)   member j (0-based) on its own link 198.18.(16+j).0/24 and
//	                 fd00:1e:0:(16+j)::/64: balancer .1, member .2
//	members (HA)     one segment 198.18.16.0/24, fd00:1e:0:16::/64:
//	                 balancer i .(1+i), member j .(100+j)
//
// The client's and members' default routes point at the (active) balancer, so
// traffic to a VIP reaches the balancer; the balancer forwards (ip_forward=1,
// rp_filter off) and routes the client source prefixes back to the client.
// Without a balancer program, a client can therefore reach member addresses
// directly through the balancer, and members see the client's real source.
//
// Members run in-process servers (see Lab.StartHTTP): HTTP on Spec.HTTPPorts
// (default 80) answering "member=<name> peer=<ip:port> local=<ip:port>\n" with
// header X-Limpet-Member, and a UDP echo on Spec.UDPPorts (default 53).
//
// Every veth end has GRO enabled (XDP_REDIRECT into a veth needs GRO or an
// XDP program on the receiving peer), and the client and member ends have TX
// checksum offload off, so packets reaching the balancer carry full checksums
// that an XDP program can update incrementally.
//
// Running limpet in the balancer (the pin directory is per lab, so parallel
// labs do not share pinned maps; limpet must be told to use it):
//
//	l := labtest.New(t, lab.Spec{MemberCount: 3})
//	var ifs []string
//	for _, i := range l.BalancerIfaces() {
//		ifs = append(ifs, i.Name) // XDP attach points, client side first
//	}
//	// write a config with ifs, l.PinDir(), l.VIP4()/VIP6() and the
//	// members' Addr4/Addr6 (l.Members()) to l.RunDir()+"/limpet.yaml", then:
//	p, err := l.StartProcess(lab.HostBalancer, limpetBin, "run", "-c", cfgPath)
//	// wait until the VIP answers:
//	r, err := l.WaitGet(ctx, l.ClientAddrs4()[0], lab.URL(netip.AddrPortFrom(l.VIP4(), 80), "/"))
//	// r.Member names the member, r.Peer is the client address it saw.
//
// p's output is in p.Output() (labtest.New logs it when the test fails); Close
// stops p (SIGTERM, then SIGKILL) and removes the pin directory. Without a
// balancer program, traffic to the VIPs gets ICMP unreachable from the
// balancer (it has no route for them unless Spec.VIPsOnBalancer).
//
// Goroutines and the network namespace: a namespace is a property of an OS
// thread. Everything this package does inside a host runs on a fresh goroutine
// that locks its OS thread, calls setns, and exits without unlocking, so the
// Go runtime destroys that thread instead of reusing it: no other goroutine
// can ever run in a lab namespace by accident. Sockets (listeners, dialled
// connections) keep the namespace they were created in, so they can be used
// from any goroutine afterwards.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Names shared by every lab, so that Clean and Leftovers can find them.
const (
	// NSPrefix starts the name of every network namespace a lab creates.
	NSPrefix = "lmp-"
	// LinkPrefix starts the name of every interface a lab creates.
	LinkPrefix = "lmp"
	// PinPrefix starts the bpffs directory handed to limpet (Lab.PinDir).
	PinPrefix = "/sys/fs/bpf/limpet-lab-"
	// RunDir holds one directory per lab run: owner, pids and process logs.
	RunDir = "/run/limpet-lab"
	// NetnsDir is where named namespaces are bind-mounted (as ip-netns does).
	NetnsDir = "/run/netns"
)

// Host names accepted by Lab.Run, Lab.StartProcess, Lab.NetNS and friends.
// Members are named by Spec.Members. Extra balancers are "lb1", "lb2", ...
// (see BalancerHost).
const (
	HostClient   = "client"
	HostBalancer = "lb"
	HostSwitch   = "sw"
)

// Limits of the addressing plan.
const (
	MaxMembers       = 64
	MaxBalancers     = 4
	MaxClientAddrs4  = 65534
	MaxClientAddrs6  = 65534
	defaultMembers   = 2
	defaultClientsV4 = 50
	defaultClientsV6 = 50
)

// Spec describes a lab topology. The zero value is a usable lab: two members
// (m1, m2), one balancer, 50+50 client source addresses, the default VIPs,
// HTTP on port 80, UDP echo on port 53.
type Spec struct {
	// Members names the member hosts (lower case letters and digits, starting
	// with a letter, at most 10 characters). Empty means MemberCount members
	// named m1..mN.
	Members []string
	// MemberCount is used when Members is empty; 0 means 2.
	MemberCount int

	// ClientAddrs4 and ClientAddrs6 are how many client source addresses
	// Lab.ClientAddrs4/6 list (0 means 50). Any address of ClientPrefix4/6 is
	// usable as a source whatever these say.
	ClientAddrs4 int
	ClientAddrs6 int

	// VIPs are the virtual addresses the balancer serves. Empty means
	// 198.18.100.10 and fd00:1e:0:100::10.
	VIPs []netip.Addr
	// DSR puts the VIPs on every member's loopback (arp_ignore=1,
	// arp_announce=2), and binds the members' UDP echo to them too.
	DSR bool
	// VIPsOnBalancer puts the VIPs on every balancer's loopback, for
	// virtual servers served by a userspace proxy on the balancer.
	VIPsOnBalancer bool

	// Balancers is the number of balancer hosts (0 means 1). More than one
	// builds the switched topology described in the package doc.
	Balancers int
	// Cluster builds the ECMP topology of cluster.go: a router (run BIRD
	// on it with StartRouter) between the client and Balancers nodes
	// (default 3) serving the VIPs in DSR mode.
	Cluster bool
	// Routed builds the topology of routed.go: members on subnets of
	// their own behind a router, and a one-armed balancer on another,
	// so that the balancer reaches members only through the router
	// (encapsulated forwarding). Members hold the VIPs on loopback
	// (DSR is implied) and answer clients through the router.
	Routed bool

	// HTTPPorts and UDPPorts the members listen on (empty means 80 and 53).
	HTTPPorts []uint16
	UDPPorts  []uint16

	// DynamicNeighbours leaves ARP/ND to the kernel. By default every host
	// gets permanent neighbour entries for the hosts it talks to, so
	// bpf_fib_lookup succeeds from the first packet.
	DynamicNeighbours bool
}

// Iface is a network interface inside a lab host.
type Iface struct {
	Host  string // host (see HostClient etc.) the interface lives in
	Name  string
	Index int
	MAC   net.HardwareAddr
	Peer  string // host at the other end of the veth (HostSwitch when bridged)
}

// Member describes a member host.
type Member struct {
	Name         string
	NetNS        string // namespace name (ip netns exec NAME ...)
	Addr4, Addr6 netip.Addr
	// Gateway4/6 is the balancer address the member routes through.
	Gateway4, Gateway6 netip.Addr
	Iface              Iface // the member's own interface
	// BalancerIface is the balancer's interface towards this member (single
	// balancer topology only; zero in HA).
	BalancerIface Iface
}

// Balancer describes a balancer host.
type Balancer struct {
	Host  string
	NetNS string
	// Addr4/6 are the balancer's addresses on the client segment.
	Addr4, Addr6 netip.Addr
	// ClientIface faces the client; MemberIfaces face the members (one per
	// member with a single balancer, one shared segment in HA).
	ClientIface  Iface
	MemberIfaces []Iface
	// Cluster topology: BackAddr4/6 are the node's addresses on the
	// member segment; FrontSwitchPort is the switch's end of its front link.
	BackAddr4, BackAddr6 netip.Addr
	FrontSwitchPort      Iface
}

// Ifaces lists every interface the balancer's XDP program should attach to:
// the client side first, then the member side.
func (b Balancer) Ifaces() []Iface {
	return append([]Iface{b.ClientIface}, b.MemberIfaces...)
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	spec   Spec
	suffix string
	runDir string
	pinDir string

	hosts     map[string]*host
	hostOrder []string
	balancers []Balancer
	members   []*member

	clientAddr4, clientAddr6 netip.Addr
	clientIface              Iface
	routerClientIface        Iface

	mu       sync.Mutex
	procs    []*Process
	relays   []*Relay
	procSeq  int
	active   int
	closed   bool
	closeErr error
}

type host struct {
	name  string
	netns string
	ns    netns.NsHandle
	nl    *netlink.Handle
	links int // links created in this host so far
}

var (
	clientPrefix4 = netip.MustParsePrefix("198.19.0.0/16")
	clientPrefix6 = netip.MustParsePrefix("fd00:1e:1::/64")
	defaultVIP4   = netip.MustParseAddr("198.18.100.10")
	defaultVIP6   = netip.MustParseAddr("fd00:1e:0:100::10")
	nameRE        = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)
	lbRE          = regexp.MustCompile(`^lb[0-9]*$`)
)

// createdRuns records the suffixes of labs created by this process (tests
// check them for leftovers at the end).
var createdRuns struct {
	sync.Mutex
	list []string
}

// BalancerHost returns the host name of balancer i: "lb" for 0, "lb1"... after.
func BalancerHost(i int) string {
	if i == 0 {
		return HostBalancer
	}
	return "lb" + strconv.Itoa(i)
}

// ClientPrefix4 is the IPv4 prefix every address of which the client can use as a source.
func ClientPrefix4() netip.Prefix { return clientPrefix4 }

// ClientPrefix6 is the IPv6 prefix every address of which the client can use as a source.
func ClientPrefix6() netip.Prefix { return clientPrefix6 }

// ClientAddr4 returns the k-th (k >= 1) IPv4 client source address: 198.19.(k/256).(k%256).
func ClientAddr4(k int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(k >> 8), byte(k)})
}

// ClientAddr6 returns the k-th (k >= 1) IPv6 client source address: fd00:1e:1::(k/256):(k%256),
// written with the same decimal digits as ClientAddr4.
func ClientAddr6(k int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd00:1e:1::%d:%d", (k>>8)&0xff, k&0xff))
}

func v4(c, d int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, byte(c), byte(d)}) }

// v6 mirrors v4: 198.18.c.d <-> fd00:1e:0:c::d (decimal digits read as hex).
func v6(c, d int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd00:1e:0:%d::%d", c, d)) }

func (s *Spec) normalize() error {
	if len(s.Members) == 0 {
		n := s.MemberCount
		if n == 0 {
			n = defaultMembers
		}
		if n < 0 || n > MaxMembers {
			return fmt.Errorf("lab: MemberCount %d: want 1..%d", n, MaxMembers)
		}
		for i := 1; i <= n; i++ {
			s.Members = append(s.Members, "m"+strconv.Itoa(i))
		}
	}
	if len(s.Members) > MaxMembers {
		return fmt.Errorf("lab: %d members: at most %d", len(s.Members), MaxMembers)
	}
	seen := map[string]bool{}
	for _, m := range s.Members {
		if !nameRE.MatchString(m) {
			return fmt.Errorf("lab: member name %q: want [a-z][a-z0-9]{0,9}", m)
		}
		if m == HostClient || m == HostSwitch || m == HostRouter || m == HostFarClient || m == HostFarMember || lbRE.MatchString(m) {
			return fmt.Errorf("lab: member name %q is reserved", m)
		}
		if seen[m] {
			return fmt.Errorf("lab: member name %q used twice", m)
		}
		seen[m] = true
	}
	if s.ClientAddrs4 == 0 {
		s.ClientAddrs4 = defaultClientsV4
	}
	if s.ClientAddrs6 == 0 {
		s.ClientAddrs6 = defaultClientsV6
	}
	if s.ClientAddrs4 < 0 || s.ClientAddrs4 > MaxClientAddrs4 {
		return fmt.Errorf("lab: ClientAddrs4 %d: want 1..%d", s.ClientAddrs4, MaxClientAddrs4)
	}
	if s.ClientAddrs6 < 0 || s.ClientAddrs6 > MaxClientAddrs6 {
		return fmt.Errorf("lab: ClientAddrs6 %d: want 1..%d", s.ClientAddrs6, MaxClientAddrs6)
	}
	if len(s.VIPs) == 0 {
		s.VIPs = []netip.Addr{defaultVIP4, defaultVIP6}
	}
	for _, v := range s.VIPs {
		if !v.IsValid() || v.Zone() != "" || v.Is4In6() {
			return fmt.Errorf("lab: VIP %v: want a plain IPv4 or IPv6 address", v)
		}
	}
	if s.Routed {
		if s.Cluster || s.Balancers > 1 {
			return errors.New("lab: Routed has one balancer and no Cluster")
		}
		s.DSR = true
	}
	if s.Cluster {
		s.DSR = true
		if s.Balancers == 0 {
			s.Balancers = 3
		}
	}
	if s.Balancers == 0 {
		s.Balancers = 1
	}
	if s.Balancers < 1 || s.Balancers > MaxBalancers {
		return fmt.Errorf("lab: Balancers %d: want 1..%d", s.Balancers, MaxBalancers)
	}
	if len(s.HTTPPorts) == 0 {
		s.HTTPPorts = []uint16{80}
	}
	if len(s.UDPPorts) == 0 {
		s.UDPPorts = []uint16{53}
	}
	return nil
}

func newSuffix() (string, error) {
	for range 10 {
		b := make([]byte, 3)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		s := hex.EncodeToString(b)
		if _, err := os.Stat(filepath.Join(RunDir, s)); errors.Is(err, os.ErrNotExist) {
			return s, nil
		}
	}
	return "", errors.New("lab: cannot find a free run suffix")
}

// New builds a lab. On error everything built so far is removed. The lab
// must be closed with Close (see also test/labtest.New and HandleSignals).
func New(ctx context.Context, spec Spec) (*Lab, error) {
	if err := spec.normalize(); err != nil {
		return nil, err
	}
	sfx, err := newSuffix()
	if err != nil {
		return nil, err
	}
	l := &Lab{
		spec:   spec,
		suffix: sfx,
		runDir: filepath.Join(RunDir, sfx),
		pinDir: PinPrefix + sfx,
		hosts:  map[string]*host{},
	}
	if err := os.MkdirAll(l.runDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	createdRuns.Lock()
	createdRuns.list = append(createdRuns.list, sfx)
	createdRuns.Unlock()
	if err := writeOwner(l.runDir); err != nil {
		_ = l.Close()
		return nil, err
	}
	if err := l.build(ctx); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return l, nil
}

// Suffix is the random per-run suffix that every name of this lab carries.
func (l *Lab) Suffix() string { return l.suffix }

// Spec returns the normalized spec the lab was built from.
func (l *Lab) Spec() Spec { return l.spec }

// PinDir is the bpffs directory limpet should pin under for this lab
// (/sys/fs/bpf/limpet-lab-<suffix>). It exists; Close removes it with
// everything pinned in it.
func (l *Lab) PinDir() string { return l.pinDir }

// RunDir is this lab's scratch directory (/run/limpet-lab/<suffix>): process
// logs, pid list; a good place for generated config files. Close removes it.
func (l *Lab) RunDir() string { return l.runDir }

// Hosts lists the host names of the lab.
func (l *Lab) Hosts() []string { return append([]string(nil), l.hostOrder...) }

// NetNS returns the namespace name of a host ("" if there is no such host),
// usable with `ip netns exec`.
func (l *Lab) NetNS(hostName string) string {
	if h := l.hosts[hostName]; h != nil {
		return h.netns
	}
	return ""
}

// NetNSPath returns the path of a host's namespace file under /run/netns.
func (l *Lab) NetNSPath(hostName string) string {
	if n := l.NetNS(hostName); n != "" {
		return filepath.Join(NetnsDir, n)
	}
	return ""
}

// Balancers describes the balancer hosts; index 0 is HostBalancer.
func (l *Lab) Balancers() []Balancer {
	out := make([]Balancer, len(l.balancers))
	for i, b := range l.balancers {
		b.MemberIfaces = append([]Iface(nil), b.MemberIfaces...)
		out[i] = b
	}
	return out
}

// BalancerIfaces lists the interfaces of HostBalancer that limpet's XDP
// program should attach to (client side first).
func (l *Lab) BalancerIfaces() []Iface { return l.balancers[0].Ifaces() }

// Members describes the member hosts, in Spec order.
func (l *Lab) Members() []Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Member, len(l.members))
	for i, m := range l.members {
		out[i] = m.info
	}
	return out
}

// Member describes one member host.
func (l *Lab) Member(name string) (Member, bool) {
	m := l.member(name)
	if m == nil {
		return Member{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return m.info, true
}

func (l *Lab) member(name string) *member {
	for _, m := range l.members {
		if m.info.Name == name {
			return m
		}
	}
	return nil
}

// ClientIface is the client's interface (towards the balancer or the switch).
func (l *Lab) ClientIface() Iface { return l.clientIface }

// ClientPrimary4 is the client's own IPv4 address on the client segment.
func (l *Lab) ClientPrimary4() netip.Addr { return l.clientAddr4 }

// ClientPrimary6 is the client's own IPv6 address on the client segment.
func (l *Lab) ClientPrimary6() netip.Addr { return l.clientAddr6 }

// ClientAddrs4 lists Spec.ClientAddrs4 IPv4 client source addresses.
func (l *Lab) ClientAddrs4() []netip.Addr {
	out := make([]netip.Addr, l.spec.ClientAddrs4)
	for i := range out {
		out[i] = ClientAddr4(i + 1)
	}
	return out
}

// ClientAddrs6 lists Spec.ClientAddrs6 IPv6 client source addresses.
func (l *Lab) ClientAddrs6() []netip.Addr {
	out := make([]netip.Addr, l.spec.ClientAddrs6)
	for i := range out {
		out[i] = ClientAddr6(i + 1)
	}
	return out
}

// VIPs lists the virtual addresses of the lab.
func (l *Lab) VIPs() []netip.Addr { return append([]netip.Addr(nil), l.spec.VIPs...) }

// VIP4 is the first IPv4 VIP (invalid if none).
func (l *Lab) VIP4() netip.Addr {
	for _, v := range l.spec.VIPs {
		if v.Is4() {
			return v
		}
	}
	return netip.Addr{}
}

// VIP6 is the first IPv6 VIP (invalid if none).
func (l *Lab) VIP6() netip.Addr {
	for _, v := range l.spec.VIPs {
		if v.Is6() {
			return v
		}
	}
	return netip.Addr{}
}

// Close stops every process and server the lab started and removes every
// namespace, link, pin and file it created. It is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.closeErr
	}
	l.closed = true
	var errs []error
	procs := append([]*Process(nil), l.procs...)
	relays := append([]*Relay(nil), l.relays...)
	l.mu.Unlock()

	for _, r := range relays {
		if err := r.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range procs {
		if err := p.Stop(3 * time.Second); err != nil {
			errs = append(errs, err)
		}
		p.keepOutput()
	}
	for _, m := range l.members {
		m.stopAll()
	}
	// Delete links explicitly, so that veths (and any XDP program on them)
	// go away now rather than when the kernel gets round to destroying the
	// namespace.
	for i := len(l.hostOrder) - 1; i >= 0; i-- {
		h := l.hosts[l.hostOrder[i]]
		if h.nl == nil {
			continue
		}
		links, err := h.nl.LinkList()
		if err == nil {
			for _, lk := range links {
				if lk.Type() == "veth" || lk.Type() == "bridge" {
					_ = h.nl.LinkDel(lk)
				}
			}
		}
		h.nl.Close()
	}
	for i := len(l.hostOrder) - 1; i >= 0; i-- {
		h := l.hosts[l.hostOrder[i]]
		if h.ns.IsOpen() {
			_ = h.ns.Close()
		}
		if err := deleteNamedNS(h.netns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(l.pinDir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(l.runDir); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	l.mu.Lock()
	l.closeErr = err
	l.mu.Unlock()
	return err
}

// Processes lists the processes started in this lab.
func (l *Lab) Processes() []*Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Process(nil), l.procs...)
}

func (l *Lab) host(name string) (*host, error) {
	h := l.hosts[name]
	if h == nil {
		names := append([]string(nil), l.hostOrder...)
		sort.Strings(names)
		return nil, fmt.Errorf("lab: no host %q (have %v)", name, names)
	}
	return h, nil
}

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
