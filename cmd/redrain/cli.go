package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"redrain/node"
)

// cli is what a command reads and writes: the process's environment and
// standard streams, or a test's.
type cli struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
	// signals, when set, stands for SIGINT and SIGTERM (tests).
	signals <-chan os.Signal
	// start, when set, starts serve's node instead of node.Start (tests).
	start func(node.Config) (servingNode, error)
}

// servingNode is what serve needs of a started node.
type servingNode interface {
	Served() <-chan error
	Stop(ctx context.Context)
}

// stopSignals returns the channel that tells serve and dev to stop, and
// the function that releases it.
func (c *cli) stopSignals() (<-chan os.Signal, func()) {
	if c.signals != nil {
		return c.signals, func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	return sig, func() { signal.Stop(sig) }
}

// command is the usage of one subcommand. Its flags are given by the
// function that runs it; every flag can also be set by the variable
// envName(command, flag).
type command struct {
	name     string
	summary  string // one line: what it does
	synopsis string // the command lines, one a line
	details  string // paragraphs after the synopsis (optional)
	examples string // 2-4 examples, comment lines above them
}

// envName is the environment variable of a command's flag: REDRAIN_,
// then the command and the flag upper-cased, '-' as '_' and joined by
// '_': serve's --admin-http is REDRAIN_SERVE_ADMIN_HTTP, admin's --key
// REDRAIN_ADMIN_KEY.
func envName(command, flag string) string {
	return "REDRAIN_" + strings.ToUpper(strings.ReplaceAll(command+"_"+flag, "-", "_"))
}

// flagSet returns an empty flag set for the command: parse errors come
// back to the caller (see parsed), nothing is printed by the flag package.
func (cmd *command) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// writeUsage prints the command's usage: what it does, the synopsis, the
// details, the examples and the flags of fs with their variables.
func (cmd *command) writeUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "redrain %s: %s\n\nUsage:\n%s\n", cmd.name, cmd.summary, indent(cmd.synopsis))
	if cmd.details != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(cmd.details, "\n"))
	}
	fmt.Fprintf(w, "\nExamples:\n%s\n", indent(cmd.examples))
	if fs == nil {
		return
	}
	hasFlags := false
	fs.VisitAll(func(f *flag.Flag) {
		hasFlags = true
		if env := "$" + envName(cmd.name, f.Name); !strings.Contains(f.Usage, env) {
			f.Usage += " [" + env + "]"
		}
	})
	if !hasFlags {
		return
	}
	fmt.Fprintf(w, "\nFlags (each also from its variable in brackets: REDRAIN_%s_ and the flag's\nname upper-cased, '-' as '_'; a flag on the command line wins):\n",
		strings.ToUpper(cmd.name))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

func indent(text string) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n")
}

// parse parses args into fs, then sets the flags args did not give from
// their variables (see parsed and setFromEnv).
func (cmd *command) parse(c *cli, fs *flag.FlagSet, args []string) error {
	if err := cmd.parsed(c, fs, fs.Parse(args)); err != nil {
		return err
	}
	return cmd.setFromEnv(c, fs)
}

// parsed handles the error of parsing fs: -h or --help prints the usage
// to stdout (exit 0); a bad flag prints the usage and the error to stderr
// (exit 2).
func (cmd *command) parsed(c *cli, fs *flag.FlagSet, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		cmd.writeUsage(c.stdout, fs)
		return exitError(0)
	default:
		cmd.writeUsage(c.stderr, fs)
		fmt.Fprintf(c.stderr, "\nredrain %s: %v\n", cmd.name, err)
		return exitError(2)
	}
}

// setFromEnv sets every flag of fs that the command line did not give
// from its variable, when that is set and not empty. A value the flag
// refuses is a usage error (exit 2) naming the variable.
func (cmd *command) setFromEnv(c *cli, fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(cmd.name, f.Name)
		v := c.getenv(name)
		if given[f.Name] || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("$%s=%q: invalid value for --%s: %v", name, v, f.Name, err))
		}
	})
	if len(errs) > 0 {
		return cmd.usageError(c, "%v", errors.Join(errs...))
	}
	return nil
}

// usageError prints a usage error and a hint to stderr and returns exit
// status 2.
func (cmd *command) usageError(c *cli, format string, args ...any) error {
	fmt.Fprintf(c.stderr, "redrain %s: %s\nrun 'redrain %s -h' for usage\n", cmd.name, fmt.Sprintf(format, args...), cmd.name)
	return exitError(2)
}

// exitCode is the exit status of a command's error: an exitError's own,
// else 1 after printing it.
func (c *cli) exitCode(name string, err error) int {
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	default:
		fmt.Fprintf(c.stderr, "redrain %s: %v\n", name, err)
		return 1
	}
}

// exitError is an exit status whose reason the command already printed
// (0 after -h).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

// logFlags are the logging flags of serve and dev.
type logFlags struct {
	level  slog.Level
	format logFormat
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.TextVar(&l.level, "log-level", slog.LevelInfo, "the least `level` logged: debug, info, warn or error")
	fs.TextVar(&l.format, "log-format", logFormat("text"), "`text|json`: text writes key=value pairs, json one JSON object a line")
}

// logger returns the logger the flags ask for, writing to w.
func (l *logFlags) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.level}
	if l.format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// logFormat is "text" or "json".
type logFormat string

func (f logFormat) MarshalText() ([]byte, error) { return []byte(f), nil }

func (f *logFormat) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "text", "json":
		*f = logFormat(s)
		return nil
	default:
		return fmt.Errorf("%q: want text or json", s)
	}
}

// version is the release this binary was built as, when the build sets
// it: go build -ldflags "-X main.version=v1.4.0" ./cmd/redrain. Without,
// the main module's version from the build information.
var version string

// versionText is the line `redrain --version` prints: the version, the
// commit (12 hex digits, "+modified" for a build from a changed tree) and
// the Go release.
func versionText(v string, info *debug.BuildInfo, ok bool) string {
	if !ok {
		if v == "" {
			v = "unknown"
		}
		return "redrain " + v
	}
	if v == "" {
		v = info.Main.Version
	}
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	out := "redrain " + v
	if rev != "" {
		out += " commit " + rev + modified
	}
	return out + " " + info.GoVersion
}
