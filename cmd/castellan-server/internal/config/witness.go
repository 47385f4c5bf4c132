package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/castellan-dev/castellan/ca/ledger/logkey"
	"github.com/castellan-dev/castellan/ca/witness"
)

// Witness is the issuance log's origin and witness policy; its
// fields are flags, environment variables and YAML keys like the others.
type Witness struct {
	LedgerOrigin    string        `yaml:"ledger_origin"`
	Witnesses       []string      `yaml:"witness"`
	WitnessQuorum   int           `yaml:"witness_quorum"`
	WitnessPolicy   string        `yaml:"witness_policy"`
	WitnessInterval time.Duration `yaml:"witness_interval"`
}

// witnessFlags registers the log's origin and witness flags.
func witnessFlags(fs *flag.FlagSet, c *Witness) {
	fs.StringVar(&c.LedgerOrigin, "ledger-origin", c.LedgerOrigin, "origin line (name) of a NEW issuance log, which names its key too (default <trust-domain>/castellan/ledger); an existing ledger keeps the origin its key was made for")
	fs.Var(listFlag{&c.Witnesses}, "witness", "a witness to submit the log's checkpoints to over C2SP tlog-witness, NAME=URL+VKEY (repeatable; VKEY is its cosignature/v1 verifier key); /log/checkpoint then serves the cosigned checkpoint and agents can check it (--log-policy)")
	fs.IntVar(&c.WitnessQuorum, "witness-quorum", c.WitnessQuorum, "how many of the --witness witnesses must cosign a checkpoint (0: all)")
	fs.StringVar(&c.WitnessPolicy, "witness-policy", c.WitnessPolicy, "YAML witness policy file (quorum; witnesses: name, url, key); exclusive with --witness")
	fs.DurationVar(&c.WitnessInterval, "witness-interval", c.WitnessInterval, "least time between two submissions of a grown log to the witnesses (0: 1s)")
}

// Policy returns the witness policy, nil if none is configured.
func (c Witness) Policy() (*witness.Policy, error) {
	return witness.PolicyFromFlags(c.WitnessPolicy, c.Witnesses, c.WitnessQuorum)
}

// validate checks the witness flags.
func (c Witness) validate() error {
	if c.WitnessInterval < 0 {
		return fmt.Errorf("--witness-interval %s is negative", c.WitnessInterval)
	}
	_, err := c.Policy()
	return err
}

// Origin returns the origin to open the ledger with: the name of
// the existing log key in keyFile (an existing ledger keeps its origin,
// which its key is named after), else --ledger-origin, else
// <trust-domain>/castellan/ledger.
func (c Witness) Origin(trustDomain, keyFile string) (string, error) {
	b, err := os.ReadFile(keyFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if c.LedgerOrigin != "" {
			return c.LedgerOrigin, nil
		}
		return logkey.OriginFor(trustDomain), nil
	case err != nil:
		return "", fmt.Errorf("castellan-server: read the log key: %w", err)
	}
	name, ok := keyName(strings.TrimSpace(string(b)))
	if !ok {
		return "", fmt.Errorf("castellan-server: the log key %s is not a note signer key (PRIVATE+KEY+<name>+...)", keyFile)
	}
	if c.LedgerOrigin != "" && c.LedgerOrigin != name {
		return "", fmt.Errorf("castellan-server: --ledger-origin %q: the existing ledger's key %s is for origin %q, and a log cannot be renamed (its checkpoints and witnesses name it); drop --ledger-origin", c.LedgerOrigin, keyFile, name)
	}
	return name, nil
}

// keyName returns the key name of a note signer key.
func keyName(skey string) (string, bool) {
	rest, ok := strings.CutPrefix(skey, "PRIVATE+KEY+")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "+")
	return name, ok && name != ""
}
