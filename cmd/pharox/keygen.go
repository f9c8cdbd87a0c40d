package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pharox/pharox-nats/credkey"
)

// keygenCmd prints a new credentials key: the standard base64 of 32 random
// bytes, one line, the form a worker's --credentials-key-file holds (one
// key per line) and PHAROX_CREDENTIALS_KEY takes. It needs no NATS and no
// existing key.
func (a *app) keygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new key that encrypts proxy credentials at rest (for the workers' --credentials-key-file)",
		Long: `keygen prints a new random key for the workers' --credentials-key-file (one key per
line; the first line encrypts, every line decrypts) or PHAROX_CREDENTIALS_KEY.
It connects to nothing. Write it straight into a file only you can read:

  umask 077; pharox keygen > credentials.key`,
		Args: noArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			k, err := credkey.Generate()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, k)
			return err
		},
	}
}
