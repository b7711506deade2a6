package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"gitlab.com/stagehand/stagehand/secret"
)

// secretCommand is werf 1.1's `werf helm secret`, for the secrets of
// .helm/secret-values.yaml and .helm/secret/ (see package secret).
func secretCommand() *cobra.Command {
	var dir, out string
	key := func() (secret.Key, error) { return secret.KeyFrom(dir, environ()) }
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Encrypt and decrypt a chart's secrets, in werf 1.1's format",
		Long: "The key comes from WERF_SECRET_KEY, else STAGEHAND_SECRET_KEY, else the project's " +
			secret.KeyFile + " (--dir). Input is FILE, or stdin; output goes to stdout, or -o FILE.",
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", ".", "the project, whose "+secret.KeyFile+" is read when no key variable is set")
	cmd.PersistentFlags().StringVarP(&out, "output", "o", "", "write to this file instead of stdout")

	transform := func(use, short string, f func(secret.Key, []byte) ([]byte, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " [FILE]", Short: short, Args: cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				k, err := key()
				if err != nil {
					return err
				}
				in, what, err := readInput(cmd, args)
				if err != nil {
					return err
				}
				res, err := f(k, in)
				if err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
				return writeOutput(cmd, out, res)
			},
		}
	}
	values := &cobra.Command{Use: "values", Short: "Encrypt, decrypt or edit a secret values file (each value apart, keys in clear)"}
	values.AddCommand(
		transform("encrypt", "Encrypt every value of a values file", secret.Key.EncryptValues),
		transform("decrypt", "Decrypt every value of a secret values file", secret.Key.DecryptValues),
		&cobra.Command{
			Use: "edit FILE", Short: "Edit a secret values file in $EDITOR, in clear, and encrypt it again", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				k, err := key()
				if err != nil {
					return err
				}
				return editValues(k, args[0])
			},
		},
	)
	cmd.AddCommand(
		&cobra.Command{
			Use: "generate-key", Short: "Print a new key (AES-128, as werf makes them)", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				k, err := secret.GenerateKey()
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), k)
				return err
			},
		},
		transform("encrypt", "Encrypt a file (or stdin) as one secret, for .helm/secret/", func(k secret.Key, in []byte) ([]byte, error) {
			s, err := k.Encrypt(in)
			return []byte(s + "\n"), err
		}),
		transform("decrypt", "Decrypt one secret (a file of .helm/secret/, or stdin)", func(k secret.Key, in []byte) ([]byte, error) {
			return k.Decrypt(string(in))
		}),
		values,
	)
	return cmd
}

func readInput(cmd *cobra.Command, args []string) ([]byte, string, error) {
	if len(args) == 1 {
		b, err := os.ReadFile(args[0])
		return b, args[0], err
	}
	b, err := io.ReadAll(cmd.InOrStdin())
	return b, "stdin", err
}

// writeOutput writes to stdout, or to a file only its owner reads (it may
// hold secrets in clear).
func writeOutput(cmd *cobra.Command, path string, b []byte) error {
	if path == "" {
		_, err := cmd.OutOrStdout().Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// editValues decrypts a secret values file into a private temporary file,
// runs $EDITOR on it, and encrypts the result back; the clear copy is
// removed whatever happens.
func editValues(k secret.Key, path string) error {
	enc, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	clear, err := k.DecryptValues(enc)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmpDir, err := os.MkdirTemp("", "stagehand-secret-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, filepath.Base(path))
	if err := os.WriteFile(tmp, clear, 0o600); err != nil {
		return err
	}
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi"
	}
	ed := exec.Command("sh", "-c", editor+` "$1"`, "editor", tmp)
	ed.Stdin, ed.Stdout, ed.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := ed.Run(); err != nil {
		return fmt.Errorf("%s: %w (the file is unchanged)", strings.Fields(editor)[0], err)
	}
	edited, err := os.ReadFile(tmp)
	if err != nil {
		return err
	}
	if bytes.Equal(edited, clear) {
		return nil
	}
	res, err := k.EncryptValues(edited)
	if err != nil {
		return fmt.Errorf("the edited values: %w (the file is unchanged)", err)
	}
	return os.WriteFile(path, res, 0o644)
}
