package main

import (
	"flag"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigRejectsUnknownReviewsVersionAndTinyTTL(t *testing.T) {
	ok := config{ttl: 2 * time.Minute, portBase: 9080, reviews: []string{"v2", "v3"}}
	if err := ok.validate(); err != nil {
		t.Fatalf("default config rejected: %v", err)
	}
	if p, _ := ok.reviewsPort("v3"); p != "127.0.0.1:9085" {
		t.Errorf("reviews v3 port %s, want 127.0.0.1:9085", p)
	}
	bad := ok
	bad.reviews = []string{"v4"}
	if bad.validate() == nil {
		t.Error("reviews v4 accepted")
	}
	bad = ok
	bad.ttl = time.Second
	if bad.validate() == nil {
		t.Error("1s SVID lifetime accepted")
	}
}

func TestConfigRefusesExtraArgsThatOverrideTheDemosOwn(t *testing.T) {
	ok := config{ttl: 2 * time.Minute, portBase: 9080, reviews: []string{"v2"},
		serverArgs: []string{"--publish-delay=30s", "--witness", "w1=http://127.0.0.1:1+key"},
		agentArgs:  []string{"--log-policy", "enforce"}}
	if err := ok.validate(); err != nil {
		t.Fatalf("extra flags the demo does not set refused: %v", err)
	}
	for _, c := range []struct {
		server, agent []string
		want          string
	}{
		{server: []string{"--data-dir=/tmp/x"}, want: "--data-dir of castellan-server"},
		{server: []string{"-listen", "127.0.0.1:1"}, want: "--listen of castellan-server"},
		{agent: []string{"--socket=/tmp/s"}, want: "--socket of castellan-agent"},
		{agent: []string{"--trust-bundle", "/tmp/b"}, want: "--trust-bundle of castellan-agent"},
	} {
		bad := ok
		bad.serverArgs, bad.agentArgs = c.server, c.agent
		err := bad.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("server %v agent %v: %v, want a refusal naming %s", c.server, c.agent, err, c.want)
		}
	}
}

func TestArgListCollectsInOrder(t *testing.T) {
	var got []string
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Var(&argList{&got}, "server-arg", "")
	if err := fs.Parse([]string{"--server-arg=--publish-delay=3s", "--server-arg", "--witness", "--server-arg=w1=x"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"--publish-delay=3s", "--witness", "w1=x"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
