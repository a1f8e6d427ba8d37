package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newCARotateMeshCmd rotates the mesh CA (issue 14, in progress).
func newCARotateMeshCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "mesh",
		Short:  "Rotate the mesh CA (not yet implemented)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("ca rotate mesh: not yet implemented") },
	}
}
