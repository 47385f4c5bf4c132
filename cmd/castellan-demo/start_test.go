package main

import (
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
