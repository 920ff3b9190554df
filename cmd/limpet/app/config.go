package app

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/config"
)

// configCheck is 'limpet config check FILE'.
func (env *Env) configCheck(c *cli.Context) error {
	if err := wantArgs(c, 1, "config check takes one FILE"); err != nil {
		return err
	}
	cfg, err := loadConfig(c.Args().First())
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(env.Stdout, "warning: %s\n", w)
	}
	l4, http := 0, 0
	for _, vs := range cfg.VirtualServers {
		if vs.Type == config.VSTypeL4 {
			l4++
		} else {
			http++
		}
	}
	fmt.Fprintf(env.Stdout, "%s: ok (%d l4 and %d http virtual servers, %d pools, %d persistence profiles)\n",
		c.Args().First(), l4, http, len(cfg.Pools), len(cfg.Profiles))
	return nil
}
