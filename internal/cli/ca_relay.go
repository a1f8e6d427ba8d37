package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// newCARotateRelayCmd rotates the relay CA (issue 14, in progress).
func newCARotateRelayCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "relay",
		Short:  "Rotate the relay CA (not yet implemented)",
		Hidden: true,
		RunE:   func(*cobra.Command, []string) error { return errors.New("ca rotate relay: not yet implemented") },
	}
}
