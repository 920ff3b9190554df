package app

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/admin"
	"github.com/limpet-lb/limpet/userspace/daemon"
)

func reloadCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:   "reload",
		Usage:  "make the running daemon read its config file again and apply it, as SIGHUP does (needs the daemon)",
		Flags:  []cli.Flag{adminSocketFlag},
		Action: func(c *cli.Context) error { return reload(env, c) },
	}
}

func reload(env *Env, c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	cl, err := dialAdmin(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := adminContext(env)
	defer cancel()
	sum, err := cl.Reload(ctx)
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
