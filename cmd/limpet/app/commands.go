package app

import (
	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
)

// commands is limpet's whole command line: every command with its usage,
// its flags and the Env method that runs it, in the order 'limpet help'
// lists them. Each method lives in the file of its noun; the flags that
// several commands share are in flags.go.
func commands(env *Env) []*cli.Command {
	return []*cli.Command{{
		Name:        "run",
		Usage:       "attach the datapath and keep it in step with the config",
		Description: runDescription,
		Flags: []cli.Flag{
			configFileFlag,
			&cli.StringSliceFlag{Name: "iface", Aliases: []string{"i"}, Usage: "interface to attach to (repeatable)"},
			&cli.StringFlag{Name: "xdp-mode", Usage: "auto, native or generic (default: settings.xdp_mode, else auto)"},
			&cli.BoolFlag{Name: "detach-on-exit", Usage: "remove the datapath and its pins on exit"},
			logFormatFlag, logLevelFlag,
		},
		Action: env.run,
	}, {
		Name:  "detach",
		Usage: "detach from every interface and remove all pinned state",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "take the pin path from this config `FILE`'s settings.pin_path (unless --pin-path is given)"},
			&cli.BoolFlag{Name: "missing-ok", Usage: "succeed when nothing is pinned (as the Debian package's removal does)"},
		},
		Action: env.detach,
	}, {
		Name:    "persistence",
		Aliases: []string{"persist"},
		Usage:   "inspect and edit the source-IP persistence tables (no daemon needed)",
		Subcommands: []*cli.Command{{
			Name:  "dump",
			Usage: "list persistence entries",
			Flags: []cli.Flag{
				vsFlag,
				profileFlag,
				&cli.StringFlag{Name: "client", Usage: "only clients in this `CIDR` (or address)"},
				&cli.StringSliceFlag{Name: "tag", Usage: "only profiles tagged `SCOPE=TAG` (SCOPE= or TAG alone match either part)"},
				outputFlag,
			},
			Action: env.persistenceDump,
		}, {
			Name:  "delete",
			Usage: "delete one client's entries; its open connections keep their server",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "client", Usage: "client `IP` (required)"},
				vsFlag,
			},
			Action: env.persistenceDelete,
		}, {
			Name:   "flush",
			Usage:  "delete every entry of the selected tables (all tables by default)",
			Flags:  []cli.Flag{vsFlag, profileFlag},
			Action: env.persistenceFlush,
		}},
	}, {
		Name:  "member",
		Usage: "take pool members out of service and back (no daemon needed; survives reloads)",
		Subcommands: []*cli.Command{{
			Name:      "disable",
			Usage:     "stop sending traffic to a member; persisted clients follow the profile's server_down policy",
			ArgsUsage: memberArgs,
			Action:    env.memberDisable,
		}, {
			Name:      "enable",
			Usage:     "return a member to service",
			ArgsUsage: memberArgs,
			Action:    env.memberEnable,
		}},
	}, {
		Name:        "member-decap",
		Usage:       "on a member: strip the IPIP/GUE header a balancer in forwarding mode ipip or gue adds (tc-BPF on the interface's ingress; stays attached after the command exits)",
		Description: memberDecapDescription,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "iface", Aliases: []string{"i"}, Usage: "the member's `INTERFACE` that receives the encapsulated packets"},
			&cli.UintFlag{Name: "gue-port", Value: loader.DefaultGUEPort, Usage: "UDP `PORT` of GUE (as the balancer's settings say)"},
			&cli.StringSliceFlag{Name: "only-to", Usage: "decapsulate only tunnel packets to this `ADDRESS` (the member's own; repeat or comma-separate; default: any destination)"},
			&cli.BoolFlag{Name: "detach", Usage: "detach from --iface and remove its pins"},
			&cli.BoolFlag{Name: "status", Usage: "show what is attached and its counters (every interface, or --iface)"},
			&cli.StringFlag{Name: "decap-pin-path", Value: loader.DefaultDecapPinPath, EnvVars: []string{"LIMPET_DECAP_PIN_PATH"},
				Usage: "bpffs `DIR` of the decapsulators' pins (one directory per interface)"},
			outputFlag,
		},
		Action: env.memberDecap,
	}, {
		Name:   "stats",
		Usage:  "show datapath counters (no daemon needed)",
		Flags:  []cli.Flag{outputFlag},
		Action: env.stats,
	}, {
		Name:  "config",
		Usage: "work with config files",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate a config file",
			ArgsUsage: "FILE",
			Action:    env.configCheck,
		}},
	}, {
		Name:   "version",
		Usage:  "print limpet's version",
		Action: env.version,
	}, {
		Name:        "l7",
		Usage:       "serve the http virtual servers of a config, without BPF",
		Description: l7Description,
		Flags: []cli.Flag{
			configFileFlag, logFormatFlag, logLevelFlag,
			&cli.StringFlag{Name: "pprof-listen", Usage: "serve Go profiles (/debug/pprof/) on a loopback `ADDR` such as 127.0.0.1:6060 (off by default)"},
		},
		Action: env.l7,
	}, {
		Name:  "cookie",
		Usage: "inspect HTTP persistence cookies and make their keys",
		Subcommands: []*cli.Command{{
			Name:      "decode",
			Usage:     "open a persistence cookie and show the member, virtual server and issue time it holds",
			ArgsUsage: "VALUE (the value, NAME=VALUE, or a pasted Set-Cookie line)",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "key-file", Aliases: []string{"k"}, Usage: "key `FILE` of the profile (repeatable, in the profile's order)"},
				outputFlag,
			},
			Action: env.cookieDecode,
		}, {
			Name:   "keygen",
			Usage:  "print a new random 32-byte key, base64, for a profile's keys list or a key file",
			Action: env.cookieKeygen,
		}},
	}, {
		Name:  "demo",
		Usage: "balance real traffic in a throwaway netns lab, show persistence, clean up (root)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep", Usage: "leave the lab up and print how to use it"},
			&cli.BoolFlag{Name: "cluster", Usage: "3 limpet nodes behind a BIRD router doing ECMP, VIP announced by BGP, persistence mirrored; drain and a crash under load"},
			&cli.IntFlag{Name: "clients", Value: 50, Usage: "client source addresses"},
			&cli.IntFlag{Name: "members", Value: 3, Usage: "pool members"},
			&cli.DurationFlag{Name: "timeout", Value: demoTimeout, Usage: "persistence timeout of the demo profile (whole seconds)"},
		},
		Action: env.demo,
	}, {
		Name:  "lab",
		Usage: "the netns lab of the demo and the integration tests",
		Subcommands: []*cli.Command{{
			Name:   "clean",
			Usage:  "remove what crashed or --keep lab runs left behind (namespaces, links, pins, processes)",
			Flags:  []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "also remove labs whose owner process still runs"}},
			Action: env.labClean,
		}},
	}, {
		Name:   "status",
		Usage:  "show the running daemon: config, interfaces, virtual servers, members and their health, tables (needs the daemon)",
		Flags:  []cli.Flag{outputFlag, adminSocketFlag},
		Action: env.status,
	}, {
		Name:   "reload",
		Usage:  "make the running daemon read its config file again and apply it, as SIGHUP does (needs the daemon)",
		Flags:  []cli.Flag{adminSocketFlag},
		Action: env.reload,
	}, {
		Name: "drain",
		Usage: "withdraw this node's VIPs from BGP so routers send new connections to the other nodes, while open flows " +
			"keep being served (needs the daemon); --cancel announces them again",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "cancel", Usage: "stop draining: announce the VIPs again as they qualify"},
			&cli.DurationFlag{Name: "wait", Usage: "after withdrawing, wait up to this long for the node's open connections to end"},
			adminSocketFlag,
		},
		Action: env.drain,
	}, {
		Name:        "completion",
		Usage:       "print the shell completion script for bash or zsh",
		ArgsUsage:   "bash|zsh",
		Description: completionDescription,
		Action:      env.completion,
	}, {
		Name:        "man",
		Usage:       "print limpet's manual page (roff, section 8), generated from this command line",
		Description: manDescription,
		Action:      env.man,
	}}
}
