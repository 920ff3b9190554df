// Package app is the limpet command line: one table of commands
// (commands.go), and one file per noun for what they do. Commands get
// an Env rather than touching os.Stdout and friends, so tests run them in
// process and read what they print.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/daemon"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2 // bad arguments or a bad config file
)

// Version is set at build time with -ldflags "-X .../app.Version=...".
var Version = "dev"

// Env is what a command may touch of the outside world.
type Env struct {
	Stdout, Stderr io.Writer
	// Context is cancelled on SIGINT and SIGTERM for long-running commands.
	Context context.Context
	// Reload delivers SIGHUP to 'limpet run'.
	Reload <-chan struct{}
}

// NewEnv is the environment of a real process.
func NewEnv() *Env {
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return &Env{Stdout: os.Stdout, Stderr: os.Stderr, Context: ctx, Reload: reload}
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// Main runs the CLI and returns the process exit code.
func Main(env *Env, args []string) int {
	if env.Context == nil {
		env.Context = context.Background()
	}
	app := newApp(env)
	err := app.RunContext(env.Context, args)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "limpet: %v\n", err)
	return exitCode(err)
}

func exitCode(err error) int {
	var ue *usageError
	var ce *daemon.ConfigError
	var fe *config.FieldError
	switch {
	case errors.As(err, &ue), errors.As(err, &ce), errors.As(err, &fe):
		return ExitUsage
	}
	return ExitRuntime
}

func newApp(env *Env) *cli.App {
	return &cli.App{
		Name:                 "limpet",
		Usage:                "XDP load balancer with source-IP and cookie persistence",
		Version:              Version,
		Writer:               env.Stdout,
		ErrWriter:            env.Stderr,
		HideVersion:          true,
		EnableBashCompletion: true, // 'limpet completion bash|zsh' prints the scripts
		Flags:                []cli.Flag{pinPathFlag},
		// urfave/cli would call os.Exit itself; Main decides the code.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return &usageError{err}
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(env.Stderr, "limpet: no command %q; see 'limpet help'\n", name)
		},
		Commands: withNoArgs(commands(env)),
		Before: func(c *cli.Context) error {
			if c.Args().Present() && c.App.Command(c.Args().First()) == nil {
				return usagef("no command %q; see 'limpet help'", c.Args().First())
			}
			return nil
		},
	}
}

// withNoArgs makes noArgs the Before of every leaf command that names no
// positional arguments (no ArgsUsage), so that no command can forget it.
func withNoArgs(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		switch {
		case len(c.Subcommands) > 0:
			withNoArgs(c.Subcommands)
		case c.ArgsUsage == "" && c.Before == nil:
			c.Before = noArgs
		}
	}
	return cmds
}

// noArgs rejects stray positional arguments: the Before of every command
// that takes none.
func noArgs(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("%s takes no arguments, got %q", c.Command.FullName(), c.Args().Slice())
	}
	return nil
}
