// Command trusted is the "trusted binary" of the agent attack tests: a
// registration entry selects its path and hash. Run as "trusted fetch
// SOCKET" it is a well-behaved workload that fetches its own SVID and prints
// "GOT <spiffe-id>"; run with no arguments (as it is when an attacker execs
// it) it does nothing but hold the descriptors it inherited until stdin
// closes or a minute passes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "fetch" {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+os.Args[2]))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("GOT", svid.ID)
		return
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
}
