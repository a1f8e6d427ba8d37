// Command meshrelay is the single binary of the meshrelay management plane: server, agent,
// CLI and demo. See `meshrelay --help`.
package main

import (
	"os"

	"github.com/meshrelay/meshrelay/internal/cli"
)

func main() { os.Exit(cli.Main()) }
