package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// Env is what every part needs from the harness.
type Env struct {
	LimpetBin string // the limpet binary (make build)
	Templates string // scripts/bench: config templates
	// AgentBin is this tree's limpet-bench-agent: part 1 runs through it
	// (in this process when empty).
	AgentBin string
	Repo     string // the git repository a baseline commit is built from
	Go       string // the go command that builds the baseline's agent
	Log      func(format string, args ...any)
}

// absFile makes *path absolute and checks that the file is there; what
// names it in the error.
func absFile(path *string, what string) error {
	p, err := filepath.Abs(*path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	*path = p
	return nil
}

// resolved makes the paths absolute: processes start in other directories.
func (e Env) resolved() (Env, error) {
	var err error
	if err := absFile(&e.LimpetBin, "limpet binary"); err != nil {
		return e, fmt.Errorf("%w (run make build)", err)
	}
	if e.Templates, err = filepath.Abs(e.Templates); err != nil {
		return e, err
	}
	if e.AgentBin != "" {
		if err := absFile(&e.AgentBin, "datapath agent"); err != nil {
			return e, err
		}
	}
	if e.Repo == "" {
		e.Repo = "."
	}
	if e.Repo, err = filepath.Abs(e.Repo); err != nil {
		return e, err
	}
	if e.Go == "" {
		e.Go = "go"
	}
	return e, nil
}

func (e Env) logf(format string, args ...any) {
	if e.Log != nil {
		e.Log(format, args...)
	}
}

// render fills a template of scripts/bench into dst.
func (e Env) render(name, dst string, data any) error {
	src, err := os.ReadFile(filepath.Join(e.Templates, name))
	if err != nil {
		return fmt.Errorf("template: %w", err)
	}
	t, err := template.New(name).Funcs(template.FuncMap{"join": strings.Join}).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return fmt.Errorf("template %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return fmt.Errorf("template %s: %w", name, err)
	}
	return os.WriteFile(dst, b.Bytes(), 0o600)
}

// benchLab is the namespace lab of parts 2 and 3: a client, a balancer and
// three members, with the templates rendered for it.
type benchLab struct {
	*lab.Lab
	env       Env
	limpetCfg string // gc_interval 60: no sweep during a measurement
	limpetGC1 string // gc_interval 1, the default
	nftCfg    string
	limpet    *lab.Process
}

type labMember struct {
	Name string
	Addr netip.Addr
}

// inBenchLab runs one part in a lab of its own, closed when it is done.
func inBenchLab[R any](ctx context.Context, env Env, run func(*benchLab) (R, error)) (R, error) {
	bl, err := newBenchLab(ctx, env)
	if err != nil {
		var none R
		return none, err
	}
	res, err := run(bl)
	return res, errors.Join(err, bl.close())
}

func newBenchLab(ctx context.Context, env Env) (*benchLab, error) {
	env, err := env.resolved()
	if err != nil {
		return nil, err
	}
	l, err := lab.New(ctx, lab.Spec{MemberCount: 3})
	if err != nil {
		return nil, err
	}
	recordLab(l)
	b := &benchLab{Lab: l, env: env}
	if err := b.renderConfigs(); err != nil {
		l.Close()
		return nil, err
	}
	return b, nil
}

func (b *benchLab) members() []labMember {
	var out []labMember
	for _, m := range b.Members() {
		out = append(out, labMember{Name: m.Name, Addr: m.Addr4})
	}
	return out
}

func (b *benchLab) renderConfigs() error {
	var ifs []string
	for _, i := range b.BalancerIfaces() {
		ifs = append(ifs, i.Name)
	}
	type pool struct {
		Name string
		Port int
	}
	b.limpetCfg = filepath.Join(b.RunDir(), "limpet.yaml")
	b.limpetGC1 = filepath.Join(b.RunDir(), "limpet-gc1.yaml")
	for gc, path := range map[int]string{60: b.limpetCfg, 1: b.limpetGC1} {
		err := b.env.render("limpet-l4.yaml.tmpl", path, map[string]any{
			"Ifaces": ifs, "PinDir": b.PinDir(), "VIP": b.VIP4(), "Members": b.members(), "GCInterval": gc,
			// The outer source of IPIP and GUE: the balancer's address.
			"EncapSource": b.Balancers()[0].Addr4,
			// DSR keeps the port: member port 0 means the virtual server's.
			"Pools": []pool{{"tcp-nat", 80}, {"udp-nat", 53}, {"tcp-dsr", 0}, {"udp-dsr", 0},
				{"tcp-ipip", 0}, {"udp-ipip", 0}, {"tcp-gue", 0}, {"udp-gue", 0}},
		})
		if err != nil {
			return err
		}
	}
	type proto struct {
		Name string
		Port int
	}
	b.nftCfg = filepath.Join(b.RunDir(), "limpet-bench.nft")
	return b.env.render("nftables.nft.tmpl", b.nftCfg, map[string]any{
		"VIP": b.VIP4(), "Members": b.members(), "Protos": []proto{{"tcp", 80}, {"udp", 53}},
	})
}

// startLimpet runs the real `limpet run` in the balancer and waits until its
// XDP program is attached to every balancer interface.
func (b *benchLab) startLimpet(ctx context.Context, cfg string) error {
	if out, err := b.RunCommand(ctx, lab.HostBalancer, b.env.LimpetBin, "config", "check", cfg); err != nil {
		return fmt.Errorf("limpet config check: %v\n%s", err, out)
	}
	p, err := b.StartProcess(lab.HostBalancer, b.env.LimpetBin, "run", "-c", cfg, "--detach-on-exit", "--log-level", "warn")
	if err != nil {
		return err
	}
	b.limpet = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for _, i := range b.BalancerIfaces() {
			if _, err := os.Stat(filepath.Join(b.PinDir(), "link_"+i.Name)); err == nil {
				n++
			}
		}
		if n == len(b.BalancerIfaces()) {
			return nil
		}
		if !p.Running() || time.Now().After(deadline) || ctx.Err() != nil {
			out := p.Output()
			b.stopLimpet()
			return fmt.Errorf("limpet run did not attach to %d interfaces (%d so far):\n%s", len(b.BalancerIfaces()), n, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopLimpet stops limpet run (which detaches on exit) and removes whatever
// it may have left pinned.
func (b *benchLab) stopLimpet() error {
	if b.limpet == nil {
		return nil
	}
	p := b.limpet
	b.limpet = nil
	err := p.Stop(10 * time.Second)
	entries, _ := os.ReadDir(b.PinDir())
	if len(entries) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, derr := b.RunCommand(ctx, lab.HostBalancer, b.env.LimpetBin, "detach", "--pin-path", b.PinDir()); derr != nil {
			err = errors.Join(err, fmt.Errorf("limpet detach: %v\n%s", derr, out))
		}
		_ = os.MkdirAll(b.PinDir(), 0o700)
	}
	return err
}

// loadNft installs the nftables peer in the balancer with an empty
// conntrack table.
func (b *benchLab) loadNft(ctx context.Context) error {
	if out, err := b.RunCommand(ctx, lab.HostBalancer, "nft", "-f", b.nftCfg); err != nil {
		return fmt.Errorf("nft -f %s: %v\n%s", b.nftCfg, err, out)
	}
	return b.flushConntrack()
}

func (b *benchLab) unloadNft(ctx context.Context) error {
	out, err := b.RunCommand(ctx, lab.HostBalancer, "nft", "delete", "table", "ip", "limpet_bench")
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("nft delete table: %v\n%s", err, out)
	}
	return b.flushConntrack()
}

func (b *benchLab) flushConntrack() error {
	return b.Run(lab.HostBalancer, func() error {
		if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
			return fmt.Errorf("flush conntrack: %w", err)
		}
		return nil
	})
}

// close stops what runs in the lab and removes the lab.
func (b *benchLab) close() error {
	err := b.stopLimpet()
	return errors.Join(err, b.Lab.Close())
}

// closeAll closes every closer, newest first.
func closeAll(cs []io.Closer) error {
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		errs = append(errs, cs[i].Close())
	}
	return errors.Join(errs...)
}
