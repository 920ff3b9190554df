package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/admin"
)

// drain is 'limpet drain [--wait D]' and 'limpet drain --cancel'.
func (env *Env) drain(c *cli.Context) error {
	if c.Duration("wait") < 0 {
		return usagef("--wait %s must not be negative", c.Duration("wait"))
	}
	if c.Bool("cancel") && c.Duration("wait") > 0 {
		return usagef("--wait applies to a drain, not to --cancel")
	}
	on := !c.Bool("cancel")
	return callAdmin(env, c, func(ctx context.Context, cl *admin.Client) error {
		if err := cl.Drain(ctx, on); err != nil {
			if errors.Is(err, admin.ErrInvalid) {
				return usagef("%v", err)
			}
			return err
		}
		if !on {
			fmt.Fprintln(env.Stdout, "drain cancelled: the VIPs are announced again as they qualify (see limpet status)")
			return nil
		}
		fmt.Fprintln(env.Stdout, "draining: every VIP is withdrawn from BGP; open connections keep being served")
		wait := c.Duration("wait")
		if wait == 0 {
			return nil
		}
		deadline := time.Now().Add(wait)
		for {
			st, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			var open uint64
			for _, p := range st.Pools {
				for _, m := range p.Members {
					open += m.ActiveConnections
				}
			}
			if open == 0 {
				fmt.Fprintln(env.Stdout, "drained: no open connection is left on this node")
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d connections still open after %s", open, wait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
}
