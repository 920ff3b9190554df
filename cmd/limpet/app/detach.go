package app

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
)

func detachCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "detach",
		Usage: "detach from every interface and remove all pinned state",
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			pin := c.String("pin-path")
			if err := loader.Detach(pin); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "detached; removed %s\n", pin)
			return nil
		},
	}
}
