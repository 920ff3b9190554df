package app

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/config"
)

func configCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "work with config files",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate a config file",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usagef("config check takes one FILE, got %d arguments", c.NArg())
				}
				cfg, err := config.Load(c.Args().First())
				if err != nil {
					return &usageError{err}
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
			},
		}},
	}
}
