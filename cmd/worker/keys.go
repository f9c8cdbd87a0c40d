package main

import (
	"github.com/pharox/pharox-nats/credkey"
)

// EnvCredentialsKey holds the credentials key(s) themselves, the first one
// encrypting (several separated by commas); --credentials-key-file is the
// other way to give them.
const EnvCredentialsKey = "PHAROX_CREDENTIALS_KEY"

// credentialsKeys loads the keys of --credentials-key-file or
// PHAROX_CREDENTIALS_KEY: nil when neither is given (credentials are then
// written in clear). Errors name the file and line or the variable and the
// key's position, never the key.
func credentialsKeys(c config) (*credkey.Ring, error) {
	switch {
	case c.CredentialsKeyFile != "":
		return credkey.LoadFile(c.CredentialsKeyFile)
	case c.CredentialsKey != "":
		return credkey.ParseList(c.CredentialsKey.Reveal(), EnvCredentialsKey)
	}
	return nil, nil
}

// keysLog says which keys the worker has, by id (never the key): "none"
// (credentials written in clear), or "a1b2c3d4 (encrypts), e5f6a7b8".
func keysLog(r *credkey.Ring) string {
	ids := r.IDs()
	if len(ids) == 0 {
		return "none: proxy credentials are stored in clear"
	}
	out := ids[0] + " (encrypts)"
	for _, id := range ids[1:] {
		out += ", " + id
	}
	return out
}
