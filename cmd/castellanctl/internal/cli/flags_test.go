package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

// ParseOne takes the one positional argument wherever the flags are, and
// refuses none or two as a usage error naming the command and what it
// wanted.
func TestParseOneFlagsBeforeOrAfter(t *testing.T) {
	g := &Globals{Stderr: &bytes.Buffer{}}
	for _, c := range []struct {
		args      []string
		want, out string
		err       string
	}{
		{[]string{"a1", "-o", "json"}, "a1", "json", ""},
		{[]string{"-o", "json", "a1"}, "a1", "json", ""},
		{[]string{"a1"}, "a1", "table", ""},
		{[]string{"-o", "json"}, "", "", "certs show: expected one SERIAL argument, got 0"},
		{[]string{"a1", "a2"}, "", "", "certs show: expected one SERIAL argument, got 2"},
		{[]string{"a1", "--nope"}, "", "", "certs show: flag provided but not defined: -nope"},
	} {
		fs := g.NewFlags("certs show")
		out := OutputFlag(fs)
		got, err := ParseOne(fs, c.args, "SERIAL")
		var ue *UsageError
		switch {
		case c.err != "" && (!errors.As(err, &ue) || err.Error() != c.err):
			t.Errorf("ParseOne(%q) = %q, %v; want usage error %q", c.args, got, err, c.err)
		case c.err == "" && (err != nil || got != c.want || *out != c.out):
			t.Errorf("ParseOne(%q) = %q (-o %s), %v; want %q (-o %s)", c.args, got, *out, err, c.want, c.out)
		}
	}
}

// -h is flag.ErrHelp, not a usage error, so that it exits 0.
func TestParseFlagsHelpIsNotAUsageError(t *testing.T) {
	var stderr bytes.Buffer
	g := &Globals{Stderr: &stderr}
	fs := g.NewGroupFlags("agent list", "usage: castellanctl agent <subcommand>\n")
	OutputFlag(fs)
	err := ParseFlags(fs, []string{"-h"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseFlags(-h) = %v; want flag.ErrHelp", err)
	}
	if !strings.HasPrefix(stderr.String(), "usage: castellanctl agent <subcommand>\n\nflags of agent list:\n") ||
		!strings.Contains(stderr.String(), "output format: table or json") {
		t.Fatalf("-h printed %q; want the group usage, then the subcommand's flags", stderr.String())
	}
}

// Subcommand and the -o check refuse what they do not know as usage
// errors that list what they accept.
func TestSubcommandAndOutputRefusals(t *testing.T) {
	if sub, rest, err := Subcommand("entry", []string{"list", "--node", "n"}, "create", "list"); err != nil || sub != "list" || len(rest) != 2 {
		t.Fatalf("Subcommand = %q %q %v", sub, rest, err)
	}
	var ue *UsageError
	for _, c := range []struct {
		err  error
		want string
	}{
		{second(Subcommand("entry", nil, "create", "list")), "entry: missing subcommand (one of [create list])"},
		{second(Subcommand("entry", []string{"lsit"}, "create", "list")), `entry: unknown subcommand "lsit" (one of [create list])`},
		{CheckOutput("entry list", "yaml"), `entry list: -o "yaml" is not table or json`},
	} {
		if !errors.As(c.err, &ue) || c.err.Error() != c.want {
			t.Errorf("got %v; want usage error %q", c.err, c.want)
		}
	}
	if CheckOutput("entry list", "json") != nil || CheckOutput("entry list", "table") != nil {
		t.Error("CheckOutput refuses table or json")
	}
}

func second(_ string, _ []string, err error) error { return err }
