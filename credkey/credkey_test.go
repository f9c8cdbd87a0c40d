package credkey_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pharox/pharox-nats/credkey"
)

func newKey(t *testing.T) string {
	t.Helper()
	k, err := credkey.Generate()
	require.NoError(t, err)
	return k
}

func TestGenerate(t *testing.T) {
	a, b := newKey(t), newKey(t)
	require.NotEqual(t, a, b)
	raw, err := base64.StdEncoding.DecodeString(a)
	require.NoError(t, err)
	require.Len(t, raw, credkey.KeySize)
}

func TestSealOpen(t *testing.T) {
	oldKey, newKey := newKey(t), newKey(t)
	old, err := credkey.ParseList(oldKey, "old")
	require.NoError(t, err)
	both, err := credkey.ParseList(newKey+","+oldKey, "both")
	require.NoError(t, err)
	require.Equal(t, old.Primary(), both.IDs()[1])
	require.NotEqual(t, old.Primary(), both.Primary())

	plain, aad := []byte(`{"user":"u","password":"s3cret"}`), []byte("proxy-1")
	sealed := old.Seal(plain, aad)
	require.True(t, strings.HasPrefix(sealed, "pxc1."+old.Primary()+"."), sealed)
	require.NotContains(t, sealed, "s3cret")
	require.Equal(t, old.Primary(), credkey.KeyID(sealed))
	require.NotEqual(t, sealed, old.Seal(plain, aad), "a fresh nonce every time")

	for _, r := range []*credkey.Ring{old, both} {
		got, err := r.Open(sealed, aad)
		require.NoError(t, err)
		require.Equal(t, plain, got)
	}
	// Sealed with the new key: the old ring alone cannot open it.
	_, err = old.Open(both.Seal(plain, aad), aad)
	require.ErrorIs(t, err, credkey.ErrUnknownKey)
	require.ErrorContains(t, err, both.Primary())
	var none *credkey.Ring
	_, err = none.Open(sealed, aad)
	require.ErrorIs(t, err, credkey.ErrUnknownKey)

	// Moved to another proxy, damaged, or not sealed at all.
	_, err = old.Open(sealed, []byte("proxy-2"))
	require.ErrorIs(t, err, credkey.ErrNotSealed)
	b := []byte(sealed)
	b[len(b)-3] ^= 1
	_, err = old.Open(string(b), aad)
	require.ErrorIs(t, err, credkey.ErrNotSealed)
	_, err = old.Open(`{"user":"u"}`, aad)
	require.ErrorIs(t, err, credkey.ErrNotSealed)
	require.Empty(t, credkey.KeyID("plain"))
}

// TestLoadFile: the first line seals, every line opens; comments and
// blank lines are skipped; a file that is not keys is refused naming the
// file and the line and never showing the text.
func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	k1, k2 := newKey(t), newKey(t)
	r, err := credkey.LoadFile(write("ok", "# rotated 2026-12\n"+k1+"\n\n  "+k2+"  \r\n"))
	require.NoError(t, err)
	one, _ := credkey.ParseList(k1, "x")
	two, _ := credkey.ParseList(k2, "x")
	require.Equal(t, []string{one.Primary(), two.Primary()}, r.IDs())

	short := base64.StdEncoding.EncodeToString([]byte("sixteen bytes!!!"))
	notB64 := "this-is-no-key-at-all!!"
	for _, tc := range []struct{ name, text, want string }{
		{"short", k1 + "\n" + short + "\n", "line 2 of " + filepath.Join(dir, "short") + " decodes to 16 bytes; a key is 32 bytes"},
		{"notb64", notB64 + "\n", "line 1 of " + filepath.Join(dir, "notb64") + " is not base64 (bad character or padding at offset 4)"},
		{"dup", k1 + "\n" + k2 + "\n" + k1 + "\n", "line 3 of " + filepath.Join(dir, "dup") + " is the same key as line 1"},
		{"empty", "# nothing\n\n", "no key in it"},
	} {
		_, err := credkey.LoadFile(write(tc.name, tc.text))
		require.ErrorContains(t, err, tc.want, tc.name)
		require.ErrorContains(t, err, "credentials key file "+filepath.Join(dir, tc.name), tc.name)
		for _, secret := range []string{k1, k2, short, notB64} {
			require.NotContains(t, err.Error(), secret, "%s: the error shows a key", tc.name)
		}
	}
	_, err = credkey.LoadFile(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "credentials key file")

	_, err = credkey.ParseList(k1+", "+short, "PHAROX_CREDENTIALS_KEY")
	require.ErrorContains(t, err, "PHAROX_CREDENTIALS_KEY: key 2 of PHAROX_CREDENTIALS_KEY decodes to 16 bytes")
	require.NotContains(t, err.Error(), short)
}
