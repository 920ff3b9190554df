package app

import (
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/daemon"
	"github.com/limpet-lb/limpet/userspace/notify"
	"github.com/limpet-lb/limpet/userspace/plan"
)

const runDescription = "Loads (or adopts) the pinned datapath, applies FILE, attaches XDP to the\n" +
	"interfaces and sweeps the tables. SIGHUP reloads FILE. On exit the datapath\n" +
	"stays pinned and forwarding unless --detach-on-exit is given. Under systemd\n" +
	"(Type=notify) it reports READY=1 once it forwards, RELOADING=1 around reloads,\n" +
	"STOPPING=1, and feeds the watchdog (WatchdogSec=) from its main loop."

// run is 'limpet run -c FILE': the daemon.
func (env *Env) run(c *cli.Context) error {
	if err := needConfigFile(c); err != nil {
		return err
	}
	if m := c.String("xdp-mode"); m != "" {
		if _, err := loader.ParseXDPMode(m); err != nil {
			return &usageError{err}
		}
	}
	log, err := newLogger(env, c)
	if err != nil {
		return err
	}
	pin := ""
	if c.IsSet("pin-path") {
		pin = c.String("pin-path")
	}
	return daemon.Run(c.Context, daemon.Options{
		ConfigPath:   c.String("config"),
		Compile:      plan.Load(c.String("config")),
		Interfaces:   c.StringSlice("iface"),
		XDPMode:      c.String("xdp-mode"),
		PinPath:      pin,
		DetachOnExit: c.Bool("detach-on-exit"),
		Logger:       log,
		Reload:       env.Reload,
		Notify:       notify.FromEnv(log),
		Version:      Version,
	})
}

// newLogger is the daemon's own log, on stderr, as --log-format and
// --log-level say.
func newLogger(env *Env, c *cli.Context) (*slog.Logger, error) {
	format, level := c.String("log-format"), c.String("log-level")
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, usagef("--log-level %q must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, opts)), nil
	}
	return nil, usagef("--log-format %q must be text or json", format)
}
