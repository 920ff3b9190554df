package app

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
)

func detachCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "detach",
		Usage: "detach from every interface and remove all pinned state",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "take the pin path from this config `FILE`'s settings.pin_path (unless --pin-path is given)"},
			&cli.BoolFlag{Name: "missing-ok", Usage: "succeed when nothing is pinned (as the Debian package's removal does)"},
		},
		Action: func(c *cli.Context) error {
			pin := c.String("pin-path")
			if f := c.String("config"); f != "" && !c.IsSet("pin-path") {
				cfg, err := config.Load(f)
				if err != nil {
					return &usageError{err}
				}
				pin = cfg.Settings.PinPath
			}
			if err := loader.Detach(pin); err != nil {
				if errors.Is(err, loader.ErrNotLoaded) && c.Bool("missing-ok") {
					fmt.Fprintf(env.Stdout, "nothing pinned at %s\n", pin)
					return nil
				}
				return err
			}
			fmt.Fprintf(env.Stdout, "detached; removed %s\n", pin)
			return nil
		},
	}
}
