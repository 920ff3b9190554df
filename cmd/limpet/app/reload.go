package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/daemon"
)

// reload is 'limpet reload'.
func (env *Env) reload(c *cli.Context) error {
	var sum admin.Summary
	err := callAdmin(env, c, func(ctx context.Context, cl *admin.Client) (err error) {
		sum, err = cl.Reload(ctx)
		return err
	})
	var ce *admin.ConfigError
	if errors.As(err, &ce) {
		// Exit 2, as 'limpet config check' would for the same file.
		return &daemon.ConfigError{Err: fmt.Errorf("the daemon refused the config; the running config is unchanged:\n%w", ce.Err)}
	}
	if err != nil {
		return err
	}
	for _, w := range sum.Warnings {
		fmt.Fprintf(env.Stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(env.Stdout, "reloaded %s (%d l4 and %d http virtual servers, %d pools, %d members, %d persistence profiles)\n",
		sum.ConfigPath, sum.L4VirtualServers, sum.HTTPVirtualServers, sum.Pools, sum.Members, sum.Profiles)
	return nil
}
