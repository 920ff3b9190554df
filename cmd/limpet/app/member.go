package app

import (
	"fmt"
	"net/netip"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/plan"
)

func memberCommand(env *Env) *cli.Command {
	sub := func(name, usage string, down bool) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "POOL MEMBER (a member name, address or address:port)",
			Action:    func(c *cli.Context) error { return setMemberDown(env, c, down) },
		}
	}
	return &cli.Command{
		Name:  "member",
		Usage: "take pool members out of service and back (no daemon needed; survives reloads)",
		Subcommands: []*cli.Command{
			sub("disable", "stop sending traffic to a member; persisted clients follow the profile's server_down policy", true),
			sub("enable", "return a member to service", false),
		},
	}
}

func findMember(meta *plan.Meta, pool, which string) (*plan.MemberMeta, error) {
	var hits []*plan.MemberMeta
	ap, apErr := netip.ParseAddrPort(which)
	a, aErr := netip.ParseAddr(which)
	for i := range meta.Members {
		m := &meta.Members[i]
		if m.Pool != pool {
			continue
		}
		switch {
		case m.Name == which,
			apErr == nil && m.Address == ap.Addr().Unmap().String() && m.Port == int(ap.Port()),
			aErr == nil && m.Address == a.Unmap().String():
			hits = append(hits, m)
		}
	}
	switch len(hits) {
	case 0:
		return nil, usagef("pool %q has no member %q", pool, which)
	case 1:
		return hits[0], nil
	}
	return nil, usagef("%q matches %d members of pool %q; give address:port", which, len(hits), pool)
}

func setMemberDown(env *Env, c *cli.Context, down bool) error {
	if c.NArg() != 2 {
		return usagef("member %s takes POOL and MEMBER, got %d arguments", c.Command.Name, c.NArg())
	}
	v, err := openView(c)
	if err != nil {
		return err
	}
	defer v.dp.Close()
	m, err := findMember(v.meta, c.Args().Get(0), c.Args().Get(1))
	if err != nil {
		return err
	}
	member, pool, err := v.meta.SetAdminDown(m.ID, down)
	if err != nil {
		return err
	}
	// Order matters: going down, leave the eligible list before the member
	// reads as down; coming up, the reverse.
	steps := []func() error{func() error { return v.dp.SetPool(pool) }, func() error { return v.dp.SetMember(member) }}
	if !down {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	doc, err := v.meta.Marshal()
	if err != nil {
		return err
	}
	if err := v.dp.WriteMeta(doc); err != nil {
		return err
	}
	state := "enabled"
	if down {
		state = "disabled"
	}
	fmt.Fprintf(env.Stdout, "member %s (%s) of pool %s %s\n", m.Name, endpoint(m.Address, m.Port), m.Pool, state)
	return nil
}

func endpoint(addr string, port int) string {
	if port == 0 {
		return addr
	}
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}
