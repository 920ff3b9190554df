package app

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

// version is 'limpet version'.
func (env *Env) version(*cli.Context) error {
	fmt.Fprintf(env.Stdout, "limpet %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
