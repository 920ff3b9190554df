package app

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

func versionCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print limpet's version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(env.Stdout, "limpet %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
