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

func runCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "attach the datapath and keep it in step with the config",
		Description: "Loads (or adopts) the pinned datapath, applies FILE, attaches XDP to the\n" +
			"interfaces and sweeps the tables. SIGHUP reloads FILE. On exit the datapath\n" +
			"stays pinned and forwarding unless --detach-on-exit is given. Under systemd\n" +
			"(Type=notify) it reports READY=1 once it forwards, RELOADING=1 around reloads,\n" +
			"STOPPING=1, and feeds the watchdog (WatchdogSec=) from its main loop.",
		Flags: []cli.Flag{
			configFileFlag,
			&cli.StringSliceFlag{Name: "iface", Aliases: []string{"i"}, Usage: "interface to attach to (repeatable)"},
			&cli.StringFlag{Name: "xdp-mode", Usage: "auto, native or generic (default: settings.xdp_mode, else auto)"},
			&cli.BoolFlag{Name: "detach-on-exit", Usage: "remove the datapath and its pins on exit"},
			logFormatFlag, logLevelFlag,
		},
		Action: func(c *cli.Context) error {
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
		},
	}
}

// The flags of the long-running commands, run and l7.
var (
	configFileFlag = &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "config `FILE` (required)"}
	logFormatFlag  = &cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"}
	logLevelFlag   = &cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"}
)

// needConfigFile fails when configFileFlag is not given.
func needConfigFile(c *cli.Context) error {
	if c.String("config") == "" {
		return usagef("%s needs a config file: -c FILE", c.Command.Name)
	}
	return nil
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
