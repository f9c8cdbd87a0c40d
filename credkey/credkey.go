// Package credkey holds the keys that encrypt proxy credentials at rest in
// the proxies bucket, and the sealing itself: AES-256-GCM with a random
// nonce, the key's id written in front of the ciphertext, the proxy's id as
// additional data (a sealed value copied into another proxy's record does
// not open). A Ring is an ordered list of keys: the first seals, every one
// opens, so keys can be rotated without a moment where a record cannot be
// read. Keys are never printed: errors name the file and line, never the
// text.
package credkey

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// Generate returns a new key as a key file or PHAROX_CREDENTIALS_KEY holds
// it: the standard base64 of 32 random bytes.
func Generate() (string, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("credentials key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// Ring is the keys a worker has, in order: the first seals, every one
// opens. A nil *Ring has no key.
type Ring struct {
	keys []key
}

type key struct {
	id   string
	aead cipher.AEAD
}

// ErrUnknownKey means a sealed value names a key the ring does not hold.
var ErrUnknownKey = errors.New("sealed with a key this worker does not have")

// ErrNotSealed means a value is not one Seal produced (or was damaged, or
// belongs to another proxy).
var ErrNotSealed = errors.New("not a sealed value this key opens")

// prefix starts every sealed value: format version 1.
const prefix = "pxc1."

// NewRing builds a ring from raw keys, the first one sealing. Two equal
// keys are refused.
func NewRing(raw ...[]byte) (*Ring, error) {
	r := &Ring{}
	seen := map[string]int{}
	for i, k := range raw {
		if len(k) != KeySize {
			return nil, fmt.Errorf("key %d is %d bytes, a credentials key is %d", i+1, len(k), KeySize)
		}
		id := keyID(k)
		if j, ok := seen[id]; ok {
			return nil, fmt.Errorf("key %d is the same as key %d", i+1, j+1)
		}
		seen[id] = i
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		r.keys = append(r.keys, key{id: id, aead: aead})
	}
	if len(r.keys) == 0 {
		return nil, errors.New("no credentials key given")
	}
	return r, nil
}

// keyID names a key without revealing it: the first 4 bytes of a SHA-256
// of it, in hex.
func keyID(k []byte) string {
	h := sha256.Sum256(append([]byte("pharox credentials key id\x00"), k...))
	return hex.EncodeToString(h[:4])
}

// Primary is the id of the key that seals ("" for a nil ring).
func (r *Ring) Primary() string {
	if r == nil {
		return ""
	}
	return r.keys[0].id
}

// IDs are the ids of the ring's keys, the sealing one first.
func (r *Ring) IDs() []string {
	if r == nil {
		return nil
	}
	out := make([]string, len(r.keys))
	for i, k := range r.keys {
		out[i] = k.id
	}
	return out
}

// Seal encrypts plaintext with the first key, bound to aad, and returns
// "pxc1.<key id>.<base64url(nonce | ciphertext | tag)>".
func (r *Ring) Seal(plaintext, aad []byte) string {
	k := r.keys[0]
	buf := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		// crypto/rand does not fail on Linux; if it ever did, a repeated
		// nonce would be worse than stopping.
		panic(fmt.Sprintf("credkey: no randomness for a nonce: %v", err))
	}
	out := k.aead.Seal(buf, buf, plaintext, aad)
	return prefix + k.id + "." + base64.RawURLEncoding.EncodeToString(out)
}

// KeyID returns the id of the key a sealed value was sealed with, "" when
// it is not a sealed value.
func KeyID(sealed string) string {
	id, _, ok := split(sealed)
	if !ok {
		return ""
	}
	return id
}

func split(sealed string) (id, body string, ok bool) {
	rest, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ".")
}

// Open decrypts a value Seal produced with one of the ring's keys, bound to
// the same aad. ErrUnknownKey: the ring lacks its key (a nil ring lacks
// every key); ErrNotSealed: it is damaged, or was sealed for another aad.
func (r *Ring) Open(sealed string, aad []byte) ([]byte, error) {
	id, body, ok := split(sealed)
	if !ok {
		return nil, ErrNotSealed
	}
	if r != nil {
		for _, k := range r.keys {
			if k.id != id {
				continue
			}
			raw, err := base64.RawURLEncoding.DecodeString(body)
			if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
				return nil, fmt.Errorf("%w (key %s)", ErrNotSealed, id)
			}
			n := k.aead.NonceSize()
			plain, err := k.aead.Open(nil, raw[:n], raw[n:], aad)
			if err != nil {
				return nil, fmt.Errorf("%w (key %s)", ErrNotSealed, id)
			}
			return plain, nil
		}
	}
	return nil, fmt.Errorf("%w (key %s)", ErrUnknownKey, id)
}
