package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/configapi"
	"github.com/meshrelay/meshrelay/internal/flagcheck"
	"github.com/meshrelay/meshrelay/internal/relay"
)

// newCARotateRelayCmd rotates the relay CA through the server's admin API and waits for it.
func newCARotateRelayCmd() *cobra.Command {
	var target adminTarget
	var newCert, newKey string
	var overlap, interval time.Duration
	var dropNow bool
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Rotate the relay CA (agents' identities and the relay's serving certificate) without downtime",
		Long: `Rotate the relay CA, the CA of the agents' client certificates and of the relay's (and the
admin API's) serving certificates, with an overlap period and no downtime:

  1. trust-both: the server creates a new CA (or takes --new-ca-cert/--new-ca-key when it was
     started with --relay-ca-cert), trusts the old and the new CA, signs every agent certificate
     with the new one and hands agents the bundle of both. Connected agents holding a
     certificate of the old CA are asked to register again: their streams end and they come
     back at once with a certificate of the new CA, keeping the bundle in their state directory.
  2. drop-old: once no connected agent holds a certificate of the old CA, the server drops it:
     the new CA issues the relay and admin serving certificates, becomes <data-dir>/relay-ca.crt
     and .key, the old one is archived in <data-dir>/relay-ca-archive, and its certificates are
     refused.

The command starts the rotation (or resumes the one under way), prints which agents are still
on the old CA, and returns once the old CA is dropped. If agents do not move within --overlap it
fails and leaves the server in the safe trust-both phase: run it again to keep waiting, or with
--drop-old-now to drop the old CA anyway (agents still on it must register again with the relay
token and a --relay-ca-file holding the new CA). A server restarted mid-rotation resumes it.
Afterwards, give agents installed later the new <data-dir>/relay-ca.crt as --relay-ca-file.`,
		Example: `  meshrelay ca rotate relay --server mgmt:9901 --admin-ca-file relay-ca.crt --overlap 10m
  meshrelay ca rotate relay --new-ca-cert new-ca.crt --new-ca-key new-ca.key   # server started with --relay-ca-cert`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (newCert == "") != (newKey == "") {
				return errors.New("--new-ca-cert and --new-ca-key go together")
			}
			if overlap <= 0 {
				return fmt.Errorf("--overlap %s: must be positive", overlap)
			}
			req := configapi.RotateRequest{Action: "start"}
			if dropNow {
				req.Action = "complete"
			}
			if newCert != "" {
				for _, f := range []struct{ flag, path string }{{"--new-ca-cert", newCert}, {"--new-ca-key", newKey}} {
					if err := flagcheck.File(f.flag, f.path); err != nil {
						return err
					}
				}
				c, err := os.ReadFile(newCert)
				if err != nil {
					return fmt.Errorf("--new-ca-cert: %w", err)
				}
				k, err := os.ReadFile(newKey)
				if err != nil {
					return fmt.Errorf("--new-ca-key: %w", err)
				}
				req.CACertPEM, req.CAKeyPEM = string(c), string(k)
			}
			return rotateRelay(cmd.Context(), cmd.OutOrStdout(), target, req, overlap, interval)
		},
	}
	adminFlags(cmd, &target)
	fs := cmd.Flags()
	fs.StringVar(&newCert, "new-ca-cert", "", "the new relay CA certificate (PEM), for a server started with --relay-ca-cert (default: the server generates the new CA)")
	fs.StringVar(&newKey, "new-ca-key", "", "private key of --new-ca-cert (PEM); sent to the server over the verified admin API")
	fs.DurationVar(&overlap, "overlap", 10*time.Minute, "how long to wait at most for the connected agents to move to the new CA; the server keeps trusting both CAs meanwhile, and after it")
	fs.DurationVar(&interval, "interval", time.Second, "how often to check the rotation's progress")
	fs.BoolVar(&dropNow, "drop-old-now", false, "drop the old CA now, even while agents still hold its certificates (they must register again with the relay token)")
	return cmd
}

// rotateRelay sends the rotation step, then waits until the server dropped the old CA. The
// admin client is made anew for every request: when the rotation completes the server's
// admin certificate is issued by the new CA, which --admin-ca-file (the server's
// <data-dir>/relay-ca.crt) then holds.
func rotateRelay(ctx context.Context, w io.Writer, target adminTarget, req configapi.RotateRequest, overlap, interval time.Duration) error {
	c, err := target.client()
	if err != nil {
		return err
	}
	var st relay.RotationStatus
	if err := c.RotateRelayCA(ctx, req, &st); err != nil {
		return err
	}
	started, next := st.Since, st.Next
	if req.Action == "complete" {
		fmt.Fprintln(w, "old relay CA dropped; the relay CA expires", st.CurrentNotAfter.Format(time.RFC3339))
		return nil
	}
	fmt.Fprintf(w, "phase %s since %s: both relay CAs trusted, the new one (expires %s) signs agent certificates\n",
		st.Phase, started.Format(time.RFC3339), st.NextNotAfter.Format(time.RFC3339))
	deadline := time.Now().Add(overlap)
	last := ""
	for {
		if st.Phase == relay.PhaseIdle {
			fmt.Fprintf(w, "phase drop-old: done; the old relay CA is dropped and archived; the relay CA (<data-dir>/relay-ca.crt) expires %s\n",
				st.CurrentNotAfter.Format(time.RFC3339))
			return nil
		}
		if p := strings.Join(st.Pending, ", "); p != last {
			last = p
			if p == "" {
				fmt.Fprintln(w, "every connected agent holds a certificate of the new CA; dropping the old one")
			} else {
				fmt.Fprintf(w, "waiting for %d agents still on the old CA: %s\n", len(st.Pending), p)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay CA rotation: agents of %s did not move to the new CA within --overlap %s; the server keeps trusting both CAs (phase %s): "+
				"check those agents (meshrelay check), then run this command again to keep waiting, or with --drop-old-now to drop the old CA anyway",
				strings.Join(st.Pending, ", "), overlap, st.Phase)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
		c, err := target.client()
		if err != nil {
			return err
		}
		var ss configapi.ServerStatus
		if err := c.Status(ctx, &ss); err != nil {
			fmt.Fprintf(w, "status unavailable, retrying: %v\n", err)
			continue
		}
		if ss.RelayCA.Phase == relay.PhaseIdle && ss.RelayCA.Current != next {
			// Another server (a replica, another data directory) answered without this rotation.
			return fmt.Errorf("relay CA rotation: the server at %s reports no rotation under way and serves the relay CA %.16s, not the new one %.16s of the rotation started %s: is another server answering?",
				c.Base, ss.RelayCA.Current, next, started.Format(time.RFC3339))
		}
		st = ss.RelayCA
	}
}
