// Command limpet is an XDP load balancer with source-IP and cookie persistence.
//
// Listeners are plain TCP: since Go 1.24 they default to MPTCP where the
// kernel has it, and an MPTCP socket refuses TCP_MD5SIG (ENOPROTOOPT), so
// GoBGP could not sign BGP sessions, nor set the listener's TTL.
//
//go:debug multipathtcp=0
package main

import (
	"os"

	"github.com/limpet-lb/limpet/cmd/limpet/app"
)

func main() {
	os.Exit(app.Main(app.NewEnv(), os.Args))
}
