package cli

import (
	"errors"
	"flag"
	"fmt"
)

// UsageError is a command-line mistake (exit code 2).
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// ExitCoder is an error that chooses the process exit code, such as a
// failed ledger verification (3).
type ExitCoder interface {
	error
	ExitCode() int
}

// IsHelp reports whether args ask for a command group's help text.
func IsHelp(args []string) bool {
	return len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help")
}

// Subcommand splits args into a subcommand name and its arguments.
func Subcommand(cmd string, args []string, known ...string) (string, []string, error) {
	if len(args) == 0 {
		return "", nil, Usagef("%s: missing subcommand (one of %v)", cmd, known)
	}
	for _, k := range known {
		if args[0] == k {
			return k, args[1:], nil
		}
	}
	return "", nil, Usagef("%s: unknown subcommand %q (one of %v)", cmd, args[0], known)
}

// NewFlags returns a flag set for a subcommand whose errors are usage
// errors.
func (g *Globals) NewFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(g.Stderr)
	return fs
}

// NewGroupFlags returns a flag set for a subcommand of a command group,
// whose -h prints the group's usage and then the subcommand's flags.
func (g *Globals) NewGroupFlags(name, groupUsage string) *flag.FlagSet {
	fs := g.NewFlags(name)
	fs.Usage = func() {
		fmt.Fprint(g.Stderr, groupUsage+"\nflags of "+name+":\n")
		fs.PrintDefaults()
	}
	return fs
}

// ParseFlags parses args, turning flag errors into usage errors.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Usagef("%s: %v", fs.Name(), err)
	}
	return nil
}

// ParseOne parses `<cmd> WHAT [flags]` with flags before or after the one
// positional argument.
func ParseOne(fs *flag.FlagSet, args []string, what string) (string, error) {
	var pos []string
	for {
		if err := ParseFlags(fs, args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		return "", Usagef("%s: expected one %s argument, got %d", fs.Name(), what, len(pos))
	}
	return pos[0], nil
}

// OutputFlag adds -o, the output format (table or json).
func OutputFlag(fs *flag.FlagSet) *string {
	return fs.String("o", "table", "output format: table or json")
}

// ParseOutputOnly parses args into fs for a command that takes no positional
// arguments and whose -o flag out must be table or json.
func ParseOutputOnly(fs *flag.FlagSet, args []string, out *string) error {
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return Usagef("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return CheckOutput(fs.Name(), *out)
}

// CheckOutput refuses an -o other than table or json.
func CheckOutput(cmd, o string) error {
	if o != "table" && o != "json" {
		return Usagef("%s: -o %q is not table or json", cmd, o)
	}
	return nil
}
