package cli

import "github.com/spf13/cobra"

// newCACmd groups the certificate authority operations: rotating the relay CA (agents'
// identities) and the mesh CA (the gateways' east-west mTLS) without downtime.
func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Rotate the relay CA or the mesh CA with an overlap period (no downtime)",
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate a CA: trust old and new, move every identity to the new one, then drop the old",
	}
	rotate.AddCommand(newCARotateRelayCmd(), newCARotateMeshCmd())
	cmd.AddCommand(rotate)
	return cmd
}
