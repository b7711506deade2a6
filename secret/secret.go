// Package secret reads and writes werf 1.1's encrypted secrets, so that
// the secret values and secret files a team encrypted with werf deploy
// unchanged, and files encrypted here work with werf.
//
// The format (werf 1.1, pkg/secret): the key is the hex text of 16, 24 or
// 32 bytes (AES-128, -192, -256). A secret is lowercase hex of the two
// bytes 10 00 (the block size, little-endian), a random 16-byte IV, and
// the data AES-CBC encrypted with PKCS#7 padding. There is no MAC: a
// wrong key is found by the padding it breaks, nearly always but not
// always (werf checks less and finds fewer). secret-values.yaml keeps its
// keys in clear and encrypts each scalar separately, as its text.
package secret

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Key is a secret key.
type Key struct{ block cipher.Block }

// ErrNoKey: no key was given where one is needed.
var ErrNoKey = errors.New("no secret key")

// ParseKey reads a key's hex text (surrounding whitespace ignored).
func ParseKey(text string) (Key, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return Key{}, ErrNoKey
	}
	b, err := hex.DecodeString(text)
	if err != nil {
		return Key{}, fmt.Errorf("the secret key is not hex (as `stagehand secret generate-key` or `werf helm secret generate-secret-key` print it): %w", err)
	}
	switch len(b) {
	case 16, 24, 32:
	default:
		return Key{}, fmt.Errorf("the secret key is %d bytes: it must be 16, 24 or 32 (32, 48 or 64 hex digits)", len(b))
	}
	block, err := aes.NewCipher(b)
	if err != nil {
		return Key{}, err
	}
	return Key{block: block}, nil
}

// GenerateKey answers a new AES-128 key's hex text, as werf makes them.
func GenerateKey() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// prefix is werf's two leading bytes: the block size, little-endian.
var prefix = []byte{aes.BlockSize, 0}

// minHex is the shortest secret: prefix, IV and one block, in hex.
const minHex = 2 * (2 + 2*aes.BlockSize)

// Encrypt encrypts data with a random IV.
func (k Key) Encrypt(data []byte) (string, error) {
	if k.block == nil {
		return "", ErrNoKey
	}
	n := aes.BlockSize - len(data)%aes.BlockSize
	padded := append(append([]byte{}, data...), bytes.Repeat([]byte{byte(n)}, n)...)
	out := make([]byte, len(prefix)+aes.BlockSize+len(padded))
	copy(out, prefix)
	iv := out[len(prefix) : len(prefix)+aes.BlockSize]
	if _, err := rand.Read(iv); err != nil {
		return "", err
	}
	cipher.NewCBCEncrypter(k.block, iv).CryptBlocks(out[len(prefix)+aes.BlockSize:], padded)
	return hex.EncodeToString(out), nil
}

// Decrypt decrypts a secret's text (surrounding whitespace ignored; ""
// is "", as in werf). Its errors never quote the secret.
func (k Key) Decrypt(text string) ([]byte, error) {
	if k.block == nil {
		return nil, ErrNoKey
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return []byte{}, nil
	}
	if len(text) < minHex {
		return nil, fmt.Errorf("not an encrypted secret: %d characters, a secret has at least %d (cut short, or never encrypted?)", len(text), minHex)
	}
	raw, err := hex.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("not an encrypted secret (cut short, or never encrypted?): %w", err)
	}
	if !bytes.Equal(raw[:2], prefix) {
		return nil, fmt.Errorf("not an encrypted secret: it starts %x, werf's secrets start 1000", raw[:2])
	}
	iv, data := raw[2:2+aes.BlockSize], raw[2+aes.BlockSize:]
	if len(data)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("not an encrypted secret: its data is not whole blocks (cut short?)")
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(k.block, iv).CryptBlocks(plain, data)
	n := int(plain[len(plain)-1])
	if n == 0 || n > aes.BlockSize || n > len(plain) || !bytes.Equal(plain[len(plain)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, errors.New("the secret key does not decrypt it (a wrong key, or a damaged secret)")
	}
	return plain[:len(plain)-n], nil
}

// KeyFile is the key's file in a project (werf's name).
const KeyFile = ".werf_secret_key"

// KeyVars are the variables that give the key, in order: werf's name,
// then stagehand's.
var KeyVars = []string{"WERF_SECRET_KEY", "STAGEHAND_SECRET_KEY"}

// KeyFrom is the key of vars (KeyVars), else of the project's KeyFile.
// Unlike werf, it never reads a key from the home directory: a shared
// runner's would be every project's key.
func KeyFrom(projectDir string, vars map[string]string) (Key, error) {
	for _, v := range KeyVars {
		if text := vars[v]; text != "" {
			k, err := ParseKey(text)
			if err != nil {
				return k, fmt.Errorf("%s: %w", v, err)
			}
			return k, nil
		}
	}
	b, err := os.ReadFile(filepath.Join(projectDir, KeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Key{}, fmt.Errorf("there is no secret key: set %s (a masked CI/CD variable) or %s, or commit %s", KeyVars[0], KeyVars[1], KeyFile)
	}
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return k, fmt.Errorf("%s: %w", KeyFile, err)
	}
	return k, nil
}
