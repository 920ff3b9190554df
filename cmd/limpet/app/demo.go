package app

import (
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/demo"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// demo is 'limpet demo': the single-node lab, or with --cluster the three-node one.
func (env *Env) demo(c *cli.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the demo builds network namespaces and loads XDP: run it as root")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if c.Bool("cluster") {
		if _, err := exec.LookPath(lab.BIRDBinary); err != nil {
			return fmt.Errorf("the cluster demo runs BIRD 2 as its router: install Debian's bird2 (make deps-test): %w", err)
		}
		clients := 100
		if c.IsSet("clients") {
			clients = c.Int("clients")
		}
		if clients < 3 || clients > 60000 {
			return usagef("--clients %d must be between 3 and 60000", clients)
		}
		return demo.RunCluster(c.Context, demo.Options{Out: env.Stdout, Binary: self, Clients: clients, Keep: c.Bool("keep")})
	}
	if n := c.Int("clients"); n < 3 || n > 60000 {
		return usagef("--clients %d must be between 3 and 60000", n)
	}
	if n := c.Int("members"); n < 2 || n > lab.MaxMembers {
		return usagef("--members %d must be between 2 and %d", n, lab.MaxMembers)
	}
	if t := c.Duration("timeout"); t < time.Second || t%time.Second != 0 {
		return usagef("--timeout %s must be whole seconds, at least 1s", t)
	}
	return demo.Run(c.Context, demo.Options{
		Out: env.Stdout, Binary: self, Clients: c.Int("clients"), Members: c.Int("members"),
		Timeout: c.Duration("timeout"), Keep: c.Bool("keep"),
	})
}

const demoTimeout = 4 * time.Second

// labClean is 'limpet lab clean'.
func (env *Env) labClean(c *cli.Context) error {
	clean := lab.Clean
	if c.Bool("force") {
		clean = lab.ForceClean
	}
	if err := clean(); err != nil {
		return err
	}
	left, err := lab.Leftovers()
	if err != nil {
		return err
	}
	if len(left) > 0 {
		fmt.Fprintf(env.Stdout, "still present (labs whose owner runs; --force removes them):\n")
		for _, l := range left {
			fmt.Fprintf(env.Stdout, "  %s\n", l)
		}
		return nil
	}
	fmt.Fprintln(env.Stdout, "no lab leftovers")
	return nil
}
