package app

import (
	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/config"
)

// The flags that several commands share (see commands.go), and the
// helpers that read them.

// pinPathFlag is the one global flag: where the pinned datapath is.
var pinPathFlag = &cli.StringFlag{
	Name:    "pin-path",
	Usage:   "bpffs directory of limpet's pinned maps and links",
	Value:   loader.DefaultPinPath,
	EnvVars: []string{"LIMPET_PIN_PATH"},
}

// outputFlag is -o of the commands that print a table or a JSON document.
var outputFlag = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "table or json"}

// adminSocketFlag selects the daemon's admin socket.
var adminSocketFlag = &cli.StringFlag{
	Name:    "socket",
	Usage:   "the daemon's admin socket (default: the one the daemon of --pin-path recorded in its pinned state, whatever its settings.admin_socket)",
	EnvVars: []string{"LIMPET_ADMIN_SOCKET"},
}

// The flags of the long-running commands, run and l7.
var (
	configFileFlag = &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "config `FILE` (required)"}
	logFormatFlag  = &cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json"}
	logLevelFlag   = &cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"}
)

// The table selectors of the persistence commands (see selectTables).
var (
	vsFlag      = &cli.StringFlag{Name: "vs", Usage: "only the tables of this virtual server"}
	profileFlag = &cli.StringFlag{Name: "profile", Usage: "only the tables of this profile"}
)

// outputFormat validates -o.
func outputFormat(c *cli.Context) (string, error) {
	o := c.String("output")
	if o != "table" && o != "json" {
		return "", usagef("-o %q: the output format must be table or json", o)
	}
	return o, nil
}

// needConfigFile fails when configFileFlag is not given.
func needConfigFile(c *cli.Context) error {
	if c.String("config") == "" {
		return usagef("%s needs a config file: -c FILE", c.Command.Name)
	}
	return nil
}

// loadConfig reads a config file; a file that does not load is a usage
// error (exit 2), as 'limpet config check' reports it.
func loadConfig(file string) (*config.Config, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, &usageError{err}
	}
	return cfg, nil
}

// wantArgs fails unless the command got n positional arguments; takes
// says which, as in "config check takes one FILE".
func wantArgs(c *cli.Context, n int, takes string) error {
	if c.NArg() != n {
		return usagef("%s, got %d arguments", takes, c.NArg())
	}
	return nil
}
