// Package demo is 'limpet demo': it builds a lab, runs the real limpet
// binary in it, sends traffic from many clients, and reports what happened.
// Every claim it prints is checked; Run fails if one does not hold.
package demo

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

//go:embed default.yaml.tmpl
var defaultConfig string

// Options control a demo run.
type Options struct {
	Out     io.Writer
	Binary  string // the limpet binary to run in the balancer
	Clients int    // client source addresses
	Members int
	Timeout time.Duration // persistence timeout of the demo profile
	// Keep leaves the lab up and prints how to use it.
	Keep bool
}

type demo struct {
	opts    Options
	cleaned bool
	l       *lab.Lab
	cfg     string
	failed  []string
	out     io.Writer
}

func (d *demo) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

// check records a claim and whether it held.
func (d *demo) check(ok bool, claim string, args ...any) {
	c := fmt.Sprintf(claim, args...)
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		d.failed = append(d.failed, c)
	}
	d.printf("  [%s] %s\n", mark, c)
}

// Run runs the demo. It returns an error when a claim failed or the lab
// could not be built; the lab is removed either way unless Keep is set.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Clients == 0 {
		opts.Clients = 50
	}
	if opts.Members == 0 {
		opts.Members = 3
	}
	if opts.Timeout == 0 {
		opts.Timeout = 4 * time.Second
	}
	start := time.Now()
	d := &demo{opts: opts, out: opts.Out}
	d.printf("limpet demo: building a lab (client with %d addresses, balancer, %d members) ...\n", opts.Clients, opts.Members)
	l, err := lab.New(ctx, lab.Spec{MemberCount: opts.Members, ClientAddrs4: opts.Clients, ClientAddrs6: 1})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	d.l = l
	defer d.removeOnReturn(ctx, &err, d.cleanup)()

	if err := d.writeConfig(); err != nil {
		return err
	}
	proc, err := l.StartProcess(lab.HostBalancer, opts.Binary, "run", "-c", d.cfg, "--log-level", "warn")
	if err != nil {
		return fmt.Errorf("start limpet run: %w", err)
	}
	vip := l.VIP4()
	web := netip.AddrPortFrom(vip, 80)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := l.WaitGet(wctx, l.ClientAddrs4()[0], lab.URL(web, "/")); err != nil {
		return fmt.Errorf("limpet never started forwarding: %w\n%s", err, proc.Output())
	}
	d.printf("limpet run is forwarding %s (NAT, TCP/80 and UDP/53) to %d members, attached with XDP to %s\n\n",
		vip, opts.Members, d.ifaceNames())

	if err := d.balance(ctx, web); err != nil {
		return err
	}
	if err := d.showTable(); err != nil {
		return err
	}
	if err := d.showCounters(); err != nil {
		return err
	}
	if err := d.expiry(ctx, web); err != nil {
		return err
	}
	if opts.Keep {
		d.keepInstructions()
		if len(d.failed) > 0 {
			return fmt.Errorf("%d claims failed: %s", len(d.failed), strings.Join(d.failed, "; "))
		}
		return nil
	}
	d.printf("\ncleaning up ...\n")
	d.cleanup()
	left, err := lab.LeftoversOf(l.Suffix())
	d.check(err == nil && len(left) == 0, "nothing left behind: no namespace, link, pin or process of this run (%d found)", len(left))
	d.printf("\ndone in %.1fs\n", time.Since(start).Seconds())
	if len(d.failed) > 0 {
		return fmt.Errorf("%d claims failed: %s", len(d.failed), strings.Join(d.failed, "; "))
	}
	return nil
}

func (d *demo) ifaceNames() string {
	var names []string
	for _, i := range d.l.BalancerIfaces() {
		names = append(names, i.Name)
	}
	return strings.Join(names, ", ")
}

func (d *demo) writeConfig() error {
	type member struct{ Name, Addr string }
	data := struct {
		PinDir, Ifaces, VIP string
		Timeout             int
		Members             []member
	}{PinDir: d.l.PinDir(), VIP: d.l.VIP4().String(), Timeout: int(d.opts.Timeout.Seconds())}
	var ifaces []string
	for _, i := range d.l.BalancerIfaces() {
		ifaces = append(ifaces, i.Name)
	}
	data.Ifaces = strings.Join(ifaces, ", ")
	for _, m := range d.l.Members() {
		data.Members = append(data.Members, member{m.Name, m.Addr4.String()})
	}
	var buf bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(defaultConfig)).Execute(&buf, data); err != nil {
		return err
	}
	d.cfg = filepath.Join(d.l.RunDir(), "limpet.yaml")
	return os.WriteFile(d.cfg, buf.Bytes(), 0o600)
}

// limpet runs the real binary, as an operator would, against the lab's pins.
func (d *demo) limpet(args ...string) ([]byte, error) {
	out, err := exec.Command(d.opts.Binary, append([]string{"--pin-path", d.l.PinDir()}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("limpet %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

type entry struct {
	VirtualServer string   `json:"virtual_server"`
	Client        string   `json:"client"`
	Server        string   `json:"server"`
	Member        string   `json:"member"`
	Connections   int      `json:"connections"`
	AgeSeconds    float64  `json:"age_seconds"`
	ExpiresIn     *float64 `json:"expires_in_seconds"`
}

func (d *demo) dump(vs string) (map[string]entry, error) {
	out, err := d.limpet("persistence", "dump", "--vs", vs, "-o", "json")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Entries []entry `json:"entries"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("persistence dump -o json: %w", err)
	}
	m := map[string]entry{}
	for _, e := range doc.Entries {
		m[e.Client] = e
	}
	return m, nil
}

const requestsPerClient = 3

// balance sends requestsPerClient GETs (each a new connection) from every
// client, and UDP queries from some, and checks persistence.
func (d *demo) balance(ctx context.Context, web netip.AddrPort) error {
	clients := d.l.ClientAddrs4()
	type result struct {
		members map[string]bool
		peerOK  bool
		err     error
	}
	results := make([]result, len(clients))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := result{members: map[string]bool{}, peerOK: true}
			for k := 0; k < requestsPerClient; k++ {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				rep, err := d.l.Get(rctx, c, lab.URL(web, "/"))
				cancel()
				if err != nil {
					r.err = err
					break
				}
				r.members[rep.Member] = true
				r.peerOK = r.peerOK && rep.Peer.Addr() == c
			}
			results[i] = r
		}()
	}
	wg.Wait()

	d.printf("1. %d clients x %d HTTP requests (each a new TCP connection) to http://%s/\n", len(clients), requestsPerClient, web)
	perMember := map[string][]string{}
	sticky, peers, failures := 0, 0, 0
	for i, r := range results {
		if r.err != nil {
			failures++
			continue
		}
		if len(r.members) == 1 {
			sticky++
			for m := range r.members {
				perMember[m] = append(perMember[m], clients[i].String())
			}
		}
		if r.peerOK {
			peers++
		}
	}
	names := sortedKeys(perMember)
	for _, m := range names {
		cs := perMember[m]
		shown := cs
		if len(shown) > 4 {
			shown = append(append([]string{}, cs[:4]...), fmt.Sprintf("... (%d more)", len(cs)-4))
		}
		d.printf("   %-4s <- %2d clients: %s\n", m, len(cs), strings.Join(shown, ", "))
	}
	d.check(failures == 0, "every request was answered (%d failed)", failures)
	d.check(sticky == len(clients), "every client reached one member on all %d of its connections (%d of %d did)", requestsPerClient, sticky, len(clients))
	d.check(len(perMember) == d.opts.Members, "round robin spread new clients over all %d members (%d used)", d.opts.Members, len(perMember))
	d.check(peers == len(clients), "NAT kept the client address: members saw the real source of every client (%d of %d)", peers, len(clients))

	// UDP: the same clients keep their member for DNS-style queries too.
	dns := netip.AddrPortFrom(web.Addr(), 53)
	udpSticky := 0
	udpClients := min(10, len(clients))
	for _, c := range clients[:udpClients] {
		seen := map[string]bool{}
		for k := 0; k < 3; k++ {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			b, err := d.l.UDPQuery(rctx, c, dns, []byte("demo"))
			cancel()
			if err != nil {
				continue
			}
			if r, err := lab.ParseReply(string(b)); err == nil {
				seen[r.Member] = true
			}
		}
		if len(seen) == 1 {
			udpSticky++
		}
	}
	d.check(udpSticky == udpClients, "UDP/53: each of %d clients got all 3 answers (new source port each) from one member (%d did)", udpClients, udpSticky)
	d.printf("\n")

	entries, err := d.dump("web")
	if err != nil {
		return err
	}
	agree := 0
	for m, cs := range perMember {
		for _, c := range cs {
			if e, ok := entries[c]; ok && e.Member == m {
				agree++
			}
		}
	}
	d.check(len(entries) == len(clients), "the web persistence table holds one entry per client (%d entries)", len(entries))
	d.check(agree == sticky, "every entry names the member that answered its client (%d of %d)", agree, sticky)
	return nil
}

func (d *demo) showTable() error {
	out, err := d.limpet("persistence", "dump", "--vs", "web")
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	d.printf("\n2. limpet persistence dump --vs web (first rows; no daemon is needed to read it)\n")
	for i, line := range lines {
		if i <= 8 || i == len(lines)-1 {
			d.printf("   %s\n", line)
		} else if i == 9 {
			d.printf("   ...\n")
		}
	}
	return nil
}

func (d *demo) showCounters() error {
	out, err := d.limpet("stats", "-o", "json")
	if err != nil {
		return err
	}
	var s struct {
		Members []struct {
			Name     string `json:"member"`
			Packets  uint64 `json:"packets_total"`
			NewFlows uint64 `json:"new_connections_total"`
		} `json:"members"`
		VirtualServers []vsCounters `json:"virtual_servers"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return fmt.Errorf("stats -o json: %w", err)
	}
	d.printf("\n3. per-member counters (limpet stats)\n")
	var flows uint64
	for _, m := range s.Members {
		d.printf("   %-4s %6d packets  %4d new connections\n", m.Name, m.Packets, m.NewFlows)
		flows += m.NewFlows
	}
	for _, v := range s.VirtualServers {
		if v.Name == "web" {
			d.printf("   virtual server web: %d new connections, %d persistence hits, %d misses (new clients)\n", v.NewFlows, v.PersistHits, v.PersistMisses)
			n := uint64(len(d.l.ClientAddrs4()))
			d.check(v.PersistMisses == n && v.PersistHits+v.PersistMisses == v.NewFlows,
				"one persistence miss per client, every other connection a hit: %d misses for %d clients, %d+%d = %d connections",
				v.PersistMisses, n, v.PersistHits, v.PersistMisses, v.NewFlows)
		}
	}
	d.check(flows > 0, "the members' counters account for the new connections (%d)", flows)
	return nil
}

// expiry shows an entry counting down after its client's connections
// closed, disappearing, and the client being balanced afresh.
func (d *demo) expiry(ctx context.Context, web netip.AddrPort) error {
	before, err := d.dump("web")
	if err != nil {
		return err
	}
	// Round robin over the pool advances once per new client of either
	// virtual server; pick a client whose member is not the next choice, so
	// the re-balance is visible.
	next, err := d.nextRoundRobin()
	if err != nil {
		return err
	}
	c := d.l.ClientAddrs4()[0]
	for _, a := range d.l.ClientAddrs4() {
		if e, ok := before[a.String()]; ok && e.Member != next {
			c = a
			break
		}
	}
	e0 := before[c.String()]
	// Its last connection's FINs may still be on the wire.
	for wait := time.Now().Add(2 * time.Second); e0.Connections > 0 && time.Now().Before(wait); {
		time.Sleep(50 * time.Millisecond)
		now, err := d.dump("web")
		if err != nil {
			return err
		}
		e0 = now[c.String()]
	}
	d.printf("\n4. timeout: %s's connections are closed, so its entry counts down (timeout %s)\n", c, d.opts.Timeout)
	if e0.ExpiresIn != nil {
		d.printf("   entry: server %s, %d connections, expires in %.1fs\n", e0.Member, e0.Connections, *e0.ExpiresIn)
	}
	d.check(e0.Connections == 0 && e0.ExpiresIn != nil, "with no open connection the entry is counting down")
	deadline := time.Now().Add(d.opts.Timeout + 5*time.Second)
	gone := false
	for time.Now().Before(deadline) {
		m, err := d.dump("web")
		if err != nil {
			return err
		}
		if _, ok := m[c.String()]; !ok {
			gone = true
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	d.check(gone, "the entry was deleted once the timeout ran out")
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rep, err := d.l.Get(rctx, c, lab.URL(web, "/"))
	cancel()
	if err != nil {
		return fmt.Errorf("request after expiry: %w", err)
	}
	after, err := d.dump("web")
	if err != nil {
		return err
	}
	e1, ok := after[c.String()]
	d.printf("   next connection: balanced afresh to %s (it had %s); new entry, age %.1fs\n", rep.Member, e0.Member, e1.AgeSeconds)
	d.check(ok && e1.Member == rep.Member && e1.AgeSeconds < e0.AgeSeconds, "a new entry was created for the client's next connection")
	d.check(rep.Member == next && rep.Member != e0.Member, "round robin chose %s, the next member in turn, not the expired entry's %s", next, e0.Member)
	return nil
}

// vsCounters is part of a virtual server's 'limpet stats -o json' view,
// whose keys are named after the Prometheus metrics.
type vsCounters struct {
	Name          string `json:"virtual_server"`
	NewFlows      uint64 `json:"new_connections_total"`
	PersistHits   uint64 `json:"persistence_hits_total"`
	PersistMisses uint64 `json:"persistence_misses_total"`
	PersistMoved  uint64 `json:"persistence_moved_total"`
}

// nextRoundRobin predicts the member the pool gives its next new client:
// both virtual servers share the pool, whose members are in config order.
func (d *demo) nextRoundRobin() (string, error) {
	out, err := d.limpet("stats", "-o", "json")
	if err != nil {
		return "", err
	}
	var s struct {
		VirtualServers []vsCounters `json:"virtual_servers"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return "", err
	}
	var decisions uint64
	for _, v := range s.VirtualServers {
		decisions += v.PersistMisses + v.PersistMoved
	}
	ms := d.l.Members()
	return ms[decisions%uint64(len(ms))].Name, nil
}

func (d *demo) keepInstructions() {
	l := d.l
	d.printf("\nThe lab stays up (--keep). Try it by hand:\n")
	d.printf("  ip netns exec %s curl http://%s/\n", l.NetNS(lab.HostClient), l.VIP4())
	d.printf("  ip netns exec %s curl --interface %s http://%s/\n", l.NetNS(lab.HostClient), l.ClientAddrs4()[1], l.VIP4())
	d.printf("  %s --pin-path %s persistence dump\n", d.opts.Binary, l.PinDir())
	d.printf("  %s --pin-path %s stats\n", d.opts.Binary, l.PinDir())
	d.printf("The datapath keeps forwarding without its daemon; entries then only expire when a client returns.\n")
	d.printf("Remove everything with: %s lab clean\n", d.opts.Binary)
}

func (d *demo) cleanup() {
	d.removeLab(func() {
		if _, err := d.limpet("detach"); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.printf("  detach: %v\n", err)
		}
	})
}

// removeOnReturn starts the lab's signal handler and returns what a demo
// defers: remove the lab with cleanup, unless Keep is set and the demo
// (whose result *err is) succeeded, then stop the handler.
func (d *demo) removeOnReturn(ctx context.Context, err *error, cleanup func()) func() {
	stopSignals := lab.HandleSignals(ctx, d.l)
	return func() {
		if !d.opts.Keep || *err != nil {
			cleanup()
		}
		stopSignals()
	}
}

// removeLab stops the lab's processes, detaches their datapaths (detach)
// and removes the lab, once.
func (d *demo) removeLab(detach func()) {
	if d.cleaned {
		return
	}
	d.cleaned = true
	for _, p := range d.l.Processes() {
		_ = p.Stop(3 * time.Second)
	}
	detach()
	if err := d.l.Close(); err != nil {
		d.printf("  removing the lab: %v\n", err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
