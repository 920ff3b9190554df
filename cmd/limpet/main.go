// Command limpet is an XDP load balancer with source-IP and cookie persistence.
package main

import (
	"os"

	"github.com/limpet-lb/limpet/cmd/limpet/app"
)

func main() {
	os.Exit(app.Main(app.NewEnv(), os.Args))
}
