package app

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/admin"
)

// memberArgs are the arguments of 'limpet member disable|enable'.
const memberArgs = "POOL MEMBER (a member name, address or address:port)"

// memberDisable is 'limpet member disable POOL MEMBER'.
func (env *Env) memberDisable(c *cli.Context) error { return env.setMemberDown(c, true) }

// memberEnable is 'limpet member enable POOL MEMBER'.
func (env *Env) memberEnable(c *cli.Context) error { return env.setMemberDown(c, false) }

// setMemberDown takes a member out of service (down) or returns it, through
// the running daemon if there is one.
func (env *Env) setMemberDown(c *cli.Context, down bool) error {
	if err := wantArgs(c, 2, "member "+c.Command.Name+" takes POOL and MEMBER"); err != nil {
		return err
	}
	pool, which := c.Args().Get(0), c.Args().Get(1)
	state := "enabled"
	if down {
		state = "disabled"
	}
	// A running daemon owns the member state (and its health view): ask it.
	// Only with no daemon are the pinned maps edited directly.
	if cl, err := dialAdmin(c); err == nil {
		defer cl.Close()
		ctx, cancel := adminContext(env)
		defer cancel()
		err := cl.SetMember(ctx, pool, which, !down)
		switch {
		case errors.Is(err, admin.ErrNotFound), errors.Is(err, admin.ErrInvalid):
			return &usageError{err}
		case err != nil:
			return err
		}
		fmt.Fprintf(env.Stdout, "member %s of pool %s %s (through the running daemon)\n", which, pool, state)
		return nil
	} else if !errors.As(err, new(*admin.NoDaemonError)) {
		return err
	}

	ed, v, err := openEditor(c)
	if err != nil {
		return err
	}
	defer ed.Close()
	m, err := v.Meta.FindMember(pool, which)
	if err != nil {
		return &usageError{err}
	}
	p, members, err := v.Meta.SetAdminDown(m.ID, down, nil)
	if err != nil {
		return err
	}
	if err := ed.WritePool(p, members, down); err != nil {
		return err
	}
	doc, err := v.Meta.Marshal()
	if err != nil {
		return err
	}
	if err := ed.WriteMeta(doc); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "member %s (%s) of pool %s %s\n", m.Name, endpoint(m.Address, m.Port), m.Pool, state)
	return nil
}
