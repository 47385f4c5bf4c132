package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxConfigBytes bounds the YAML configuration file.
const maxConfigBytes = 1 << 20

// listFlag is a repeatable flag. The first value a source (the YAML file,
// the environment, the command line) gives replaces what an earlier source
// set; later values from the same source are appended.
type listFlag struct {
	p     *[]string
	fresh bool // the next Set starts a new list
}

func (l *listFlag) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

// Set implements flag.Value.
func (l *listFlag) Set(v string) error {
	if l.fresh {
		*l.p, l.fresh = nil, false
	}
	*l.p = append(*l.p, v)
	return nil
}

// startSource makes every list flag of fs start over at its next value.
func startSource(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if l, ok := f.Value.(*listFlag); ok {
			l.fresh = true
		}
	})
}

// notFromSources are the flags neither the environment nor the file may
// set: the join token (CASTELLAN_AGENT_JOIN_TOKEN is read on its own, and
// the flag only refuses) and the file itself.
var notFromSources = map[string]bool{"join-token": true, "config": true}

// applyEnv sets every flag whose CASTELLAN_AGENT_* variable is set; a list
// flag takes a comma-separated list.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	startSource(fs)
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v := getenv(envName(f.Name))
		if v == "" || notFromSources[f.Name] || err != nil {
			return
		}
		vals := []string{v}
		if _, ok := f.Value.(*listFlag); ok {
			vals = strings.Split(v, ",")
		}
		for _, one := range vals {
			if e := fs.Set(f.Name, strings.TrimSpace(one)); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
				return
			}
		}
	})
	return err
}

// applyYAML sets the flags named by the keys of the YAML mapping in path
// (flag names with _ for -). A list flag takes a sequence or one value.
func applyYAML(fs *flag.FlagSet, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	var doc map[string]yaml.Node
	if err := yaml.NewDecoder(io.LimitReader(f, maxConfigBytes)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("--config %s: %w (want a mapping whose keys are the flag names with _ for -, e.g. server_address)", path, err)
	}
	startSource(fs)
	for key, node := range doc {
		name := strings.ReplaceAll(key, "_", "-")
		fl := fs.Lookup(name)
		switch {
		case name == "join-token":
			return fmt.Errorf("--config %s: join_token is refused: put the token in a file only the agent's user can read and set join_token_file", path)
		case fl == nil || notFromSources[name]:
			return fmt.Errorf("--config %s: unknown key %q (keys are the flag names with _ for -; see castellan-agent -h)", path, key)
		}
		vals, err := yamlValues(node, fl)
		if err != nil {
			return fmt.Errorf("--config %s: %s (line %d): %w", path, key, node.Line, err)
		}
		if l, ok := fl.Value.(*listFlag); ok && len(vals) == 0 {
			*l.p = nil // an empty list clears the default
		}
		for _, v := range vals {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("--config %s: %s (line %d): %w", path, key, node.Line, err)
			}
		}
	}
	return nil
}

// yamlValues returns the scalar value of node, or the values of a sequence
// for a list flag.
func yamlValues(node yaml.Node, fl *flag.Flag) ([]string, error) {
	_, isList := fl.Value.(*listFlag)
	switch {
	case node.Kind == yaml.ScalarNode:
		return []string{node.Value}, nil
	case node.Kind == yaml.SequenceNode && isList:
		out := make([]string, 0, len(node.Content))
		for _, n := range node.Content {
			if n.Kind != yaml.ScalarNode {
				return nil, errors.New("want a list of strings")
			}
			out = append(out, n.Value)
		}
		return out, nil
	case isList:
		return nil, errors.New("want a string or a list of strings")
	}
	return nil, errors.New("want a single value")
}
