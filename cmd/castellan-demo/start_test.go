package main

import (
	"testing"
	"time"
)

func TestParseTokenReadsBareJSONAndLabelledOutput(t *testing.T) {
	for in, want := range map[string]string{
		"abc123\n":                               "abc123",
		`{"token":"abc123","node":"n"}`:          "abc123",
		"join token for node n\nToken: abc123\n": "abc123",
	} {
		got, err := parseToken([]byte(in))
		if err != nil || got != want {
			t.Errorf("parseToken(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := parseToken([]byte("  \n")); err == nil {
		t.Error("parseToken accepted empty output")
	}
}

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
