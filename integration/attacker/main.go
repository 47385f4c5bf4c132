// Command attacker tries to take an identity from the castellan agent the
// ways a local user would, for the integration tests. Each attack prints one
// line, from the process that ends up using the connection:
// "GOT <spiffe-id>" if it obtained an SVID, or "DENIED <code>: <message>".
//
//	attacker pass SOCKET TRUSTED API [park]
//	    start a helper, connect, send the connection to the helper with
//	    SCM_RIGHTS, then execve TRUSTED keeping the connection (not
//	    close-on-exec). The helper waits until this process runs TRUSTED
//	    and calls API (workload or sds) on the connection. With "park" the
//	    helper leaves the descriptor in flight until then, so that only
//	    TRUSTED holds it in a descriptor table while the agent attests.
//	attacker fork SOCKET TRUSTED API
//	    connect, start a child that inherits the connection, then execve
//	    TRUSTED; the child calls API once this process runs TRUSTED.
//	attacker flood SOCKET N
//	    open N connections that send the HTTP/2 preface and then nothing;
//	    print "ready", then "closed K" once the agent closed K of them.
package main

import (
	"fmt"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: attacker pass|fork|flood SOCKET ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "pass":
		err = pass(os.Args[2], os.Args[3], os.Args[4], len(os.Args) > 5 && os.Args[5] == "park")
	case "fork":
		err = fork(os.Args[2], os.Args[3], os.Args[4])
	case "flood":
		var n int
		if n, err = strconv.Atoi(os.Args[3]); err == nil {
			err = flood(os.Args[2], n)
		}
	case "receive": // the helper of pass: receive on fd 3, then use
		err = receive(os.Args[2], os.Args[3], os.Args[4], len(os.Args) > 5 && os.Args[5] == "park")
	case "use": // the child of fork: use fd 3
		err = use(os.Args[2], os.Args[3], os.NewFile(3, "inherited"))
	default:
		err = fmt.Errorf("unknown attack %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
}
