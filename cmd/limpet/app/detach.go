package app

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
)

// detach is 'limpet detach': the pin path is --pin-path's, or else the
// --config file's settings.pin_path.
func (env *Env) detach(c *cli.Context) error {
	pin := c.String("pin-path")
	if f := c.String("config"); f != "" && !c.IsSet("pin-path") {
		cfg, err := loadConfig(f)
		if err != nil {
			return err
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
}
