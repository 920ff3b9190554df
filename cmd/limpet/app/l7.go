package app

import (
	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/l7"
	"github.com/limpet-lb/limpet/userspace/plan"
)

const l7Description = "Runs the HTTP proxy alone: every virtual server of type http in FILE, with\n" +
	"its cookie, app cookie, generic or source-IP persistence held in memory.\n" +
	"l4 virtual servers are ignored. SIGINT or SIGTERM shuts down gracefully.\n" +
	"Access logs go where each virtual server's access_log says (stdout by\n" +
	"default), as JSON lines; the daemon's own log goes to stderr."

// l7 is 'limpet l7 -c FILE': the HTTP proxy alone, until the context ends.
func (env *Env) l7(c *cli.Context) error {
	if err := needConfigFile(c); err != nil {
		return err
	}
	log, err := newLogger(env, c)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(c.String("config"))
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	sp, err := plan.L7(cfg)
	if err != nil {
		return &usageError{err}
	}
	srv, err := l7.New(sp, l7.Options{Logger: log, Stdout: env.Stdout, Stderr: env.Stderr})
	if err != nil {
		return &usageError{err}
	}
	if addr := c.String("pprof-listen"); addr != "" {
		if _, err := l7.ServeProfiles(c.Context, addr, log); err != nil {
			return &usageError{err}
		}
	}
	return srv.Serve(c.Context)
}
