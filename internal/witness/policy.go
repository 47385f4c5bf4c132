package witness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Witness is one witness of a policy: a local label, the submission prefix
// of its C2SP tlog-witness API and its cosigning key.
type Witness struct {
	// Name labels the witness in metrics, logs and errors. It is local to
	// the policy (the key's own name is Key.Name()).
	Name string
	// URL is the submission prefix: checkpoints are POSTed to
	// URL + "/add-checkpoint".
	URL *url.URL
	// Key verifies the witness's cosignatures.
	Key *Key
}

// Policy is a witness policy: a checkpoint is witnessed when at least
// Quorum of the policy's witnesses cosigned it. A Policy is immutable.
// Build one with NewPolicy, ParsePolicy or ParsePolicyYAML.
type Policy struct {
	witnesses []Witness
	quorum    int
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// NewPolicy returns the policy "quorum of ws". It refuses an empty list, a
// quorum outside 1..len(ws), a bad name or URL, and two witnesses that
// share a name, a URL or a key: one party must count once toward a quorum.
func NewPolicy(quorum int, ws ...Witness) (*Policy, error) {
	if len(ws) == 0 {
		return nil, errors.New("witness policy: no witnesses; list at least one (NAME=URL+VKEY)")
	}
	if quorum < 1 || quorum > len(ws) {
		return nil, fmt.Errorf("witness policy: quorum %d is not between 1 and the number of witnesses (%d)", quorum, len(ws))
	}
	names, urls, keys := map[string]bool{}, map[string]string{}, map[string]string{}
	for _, w := range ws {
		if !nameRE.MatchString(w.Name) {
			return nil, fmt.Errorf("witness policy: name %q: use 1 to 64 letters, digits, '.', '_' or '-'", w.Name)
		}
		if names[w.Name] {
			return nil, fmt.Errorf("witness policy: two witnesses are named %q", w.Name)
		}
		names[w.Name] = true
		if w.Key == nil || w.URL == nil {
			return nil, fmt.Errorf("witness policy: witness %q has no key or URL", w.Name)
		}
		if err := checkURL(w.URL); err != nil {
			return nil, fmt.Errorf("witness policy: witness %q: %w", w.Name, err)
		}
		u := strings.TrimSuffix(w.URL.String(), "/")
		if other, dup := urls[u]; dup {
			return nil, fmt.Errorf("witness policy: witnesses %q and %q share the URL %s; one witness counts once toward the quorum, list it once", other, w.Name, u)
		}
		urls[u] = w.Name
		k := fmt.Sprintf("%s+%08x", w.Key.Name(), w.Key.KeyHash())
		if other, dup := keys[k]; dup {
			return nil, fmt.Errorf("witness policy: witnesses %q and %q have the same key %s", other, w.Name, k)
		}
		keys[k] = w.Name
	}
	return &Policy{witnesses: append([]Witness(nil), ws...), quorum: quorum}, nil
}

// Quorum is the number of witnesses that must cosign a checkpoint.
func (p *Policy) Quorum() int { return p.quorum }

// Witnesses returns the policy's witnesses, in the order given.
func (p *Policy) Witnesses() []Witness { return append([]Witness(nil), p.witnesses...) }

// String describes the policy, e.g. "2 of [w1 w2 w3]".
func (p *Policy) String() string {
	names := make([]string, len(p.witnesses))
	for i, w := range p.witnesses {
		names[i] = w.Name
	}
	return fmt.Sprintf("%d of [%s]", p.quorum, strings.Join(names, " "))
}

// checkURL accepts an absolute http or https URL with a host and no
// credentials, query or fragment.
func checkURL(u *url.URL) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("URL %q: want an http:// or https:// URL", u.Redacted())
	case u.Host == "":
		return fmt.Errorf("URL %q has no host", u.Redacted())
	case u.User != nil:
		return fmt.Errorf("URL %q carries credentials; witnesses take none", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("URL %q: a submission prefix has no query or fragment", u.Redacted())
	}
	return nil
}

// parseURL parses and checks a witness URL.
func parseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", s, err)
	}
	return u, checkURL(u)
}

// ParseWitness parses the flag form of a witness, NAME=URL+VKEY, e.g.
//
//	w1=https://witness.example/+witness.example/w1+1a2b3c4d+BASE64KEY
//
// URL is the submission prefix and VKEY the witness's cosignature/v1 key
// (see ParseKey). A '+' may appear in the URL and in the key's base64, so
// the form is accepted only when exactly one split gives a valid URL and a
// valid key.
func ParseWitness(s string) (Witness, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Witness{}, fmt.Errorf("witness %q: want NAME=URL+VKEY", s)
	}
	var found []Witness
	var firstErr error
	for i := 0; i < len(rest); i++ {
		if rest[i] != '+' {
			continue
		}
		u, err := parseURL(rest[:i])
		if err != nil {
			continue
		}
		k, err := ParseKey(rest[i+1:])
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		found = append(found, Witness{Name: name, URL: u, Key: k})
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return Witness{}, fmt.Errorf("witness %q: ambiguous: more than one split of URL+VKEY is valid; use the YAML policy form", s)
	case firstErr != nil:
		return Witness{}, fmt.Errorf("witness %q: %w", name, firstErr)
	}
	u, _, _ := strings.Cut(rest, "+")
	if _, err := parseURL(u); err != nil {
		return Witness{}, fmt.Errorf("witness %q: %w (want NAME=URL+VKEY)", name, err)
	}
	return Witness{}, fmt.Errorf("witness %q: no verifier key after the URL (want NAME=URL+VKEY)", name)
}

// ParsePolicy builds a policy from repeated NAME=URL+VKEY flags and a
// quorum; quorum 0 means all of them.
func ParsePolicy(quorum int, witnesses []string) (*Policy, error) {
	ws := make([]Witness, 0, len(witnesses))
	for _, s := range witnesses {
		w, err := ParseWitness(s)
		if err != nil {
			return nil, fmt.Errorf("witness policy: %w", err)
		}
		ws = append(ws, w)
	}
	if quorum == 0 {
		quorum = len(ws)
	}
	return NewPolicy(quorum, ws...)
}

// policyYAML is the YAML form of a policy.
type policyYAML struct {
	Quorum    int `yaml:"quorum"`
	Witnesses []struct {
		Name string `yaml:"name"`
		URL  string `yaml:"url"`
		Key  string `yaml:"key"`
	} `yaml:"witnesses"`
}

// ParsePolicyYAML parses a policy written as
//
//	quorum: 2            # 0 or absent: all of them
//	witnesses:
//	  - name: w1
//	    url: https://witness1.example/
//	    key: witness1.example/w1+1a2b3c4d+BASE64KEY
//	  - ...
//
// Unknown fields are errors, so a typo never weakens a policy silently.
func ParsePolicyYAML(b []byte) (*Policy, error) {
	var y policyYAML
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&y); errors.Is(err, io.EOF) {
		return nil, errors.New("witness policy: empty policy; give a quorum and a list of witnesses")
	} else if err != nil {
		return nil, fmt.Errorf("witness policy: %w", err)
	}
	ws := make([]Witness, 0, len(y.Witnesses))
	for i, e := range y.Witnesses {
		u, err := parseURL(e.URL)
		if err != nil {
			return nil, fmt.Errorf("witness policy: witness %d (%q): %w", i+1, e.Name, err)
		}
		k, err := ParseKey(e.Key)
		if err != nil {
			return nil, fmt.Errorf("witness policy: witness %d (%q): %w", i+1, e.Name, err)
		}
		ws = append(ws, Witness{Name: e.Name, URL: u, Key: k})
	}
	if y.Quorum == 0 {
		y.Quorum = len(ws)
	}
	return NewPolicy(y.Quorum, ws...)
}

// PolicyFromFlags builds the policy given by the command-line forms shared
// by castellan-server and castellan-agent: a YAML policy file
// (--witness-policy), or repeated NAME=URL+VKEY (--witness) with a quorum
// (--witness-quorum; 0: all). It returns nil when none is given, and
// refuses the two forms together and a quorum without witnesses.
func PolicyFromFlags(file string, witnesses []string, quorum int) (*Policy, error) {
	switch {
	case file != "" && len(witnesses) > 0:
		return nil, errors.New("--witness-policy and --witness are exclusive; give the policy one way")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--witness-policy: %w", err)
		}
		p, err := ParsePolicyYAML(b)
		if err != nil {
			return nil, fmt.Errorf("--witness-policy %s: %w", file, err)
		}
		return p, nil
	case len(witnesses) > 0:
		p, err := ParsePolicy(quorum, witnesses)
		if err != nil {
			return nil, fmt.Errorf("--witness: %w", err)
		}
		return p, nil
	case quorum != 0:
		return nil, errors.New("--witness-quorum without --witness")
	}
	return nil, nil
}
