package record

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"

	"github.com/pharox/pharox-nats/credkey"
	"github.com/pharox/pharox-nats/model"
)

// Codec writes and reads proxy records in the proxies bucket: it writes
// the binary layout (binary.go) and reads it and the JSON written before
// it. With a key ring it seals a proxy's credentials with the ring's first
// key (AES-256-GCM, bound to the proxy's id) in the record's sealed field
// ("sealed_credentials" in JSON), with none in clear; without one it
// writes them in clear. It reads both forms.
//
// A record read into memory holds its credentials in clear: a worker
// decrypts once per version it installs, not once per acquire reply (see
// the README's "Security"). A record whose sealed credentials this worker
// cannot open keeps the sealed value as it is, with Credentials nil and
// CredentialsUnreadable true, so that the worker's own writes of it (a
// release, an expiry) carry the value on unchanged.
type Codec struct {
	ring *credkey.Ring
	// states holds one shared sealState per key of the ring, so that a
	// record sealed under a known key costs one pointer in memory.
	states map[string]*sealState
	// strs shares the values records repeat as they are decoded (nil in
	// the zero Codec: nothing shared).
	strs *strTable
}

// sealState is how a stored version keeps its credentials: sealed under
// keyID; blob is the sealed value itself, kept only when this worker could
// not open it.
type sealState struct {
	keyID string
	blob  string
}

// NewCodec returns a codec that seals with ring's first key and opens with
// any of its keys; a nil ring writes credentials in clear and cannot open
// sealed ones.
func NewCodec(ring *credkey.Ring) *Codec {
	c := &Codec{ring: ring, states: map[string]*sealState{}, strs: newStrTable()}
	for _, id := range ring.IDs() {
		c.states[id] = &sealState{keyID: id}
	}
	return c
}

// Ring is the codec's key ring (nil without keys).
func (c *Codec) Ring() *credkey.Ring { return c.ring }

// aad binds a sealed value to its proxy.
func aad(proxyID string) []byte { return []byte("pharox proxy credentials\x00" + proxyID) }

// Encode is rec as written to the bucket (in the binary layout, see
// binary.go), with a nonce new in every write, so
// that a write whose answer was lost (or that the watch delivers back) can
// be told from another worker's identical one. The nonce is not kept in
// memory. With a key, the credentials are sealed afresh (a new GCM nonce)
// in every write; Encode records on rec how they are now stored, so the
// record the writer installs knows its key. rec must be the writer's own
// copy (not one installed in a replica).
func (c *Codec) Encode(rec *Proxy) []byte {
	creds, sealed := c.stored(rec)
	return encodeBinary(rec, creds, sealed, rand.Uint64())
}

// encodeJSON is rec as written before the binary layout: what Decode still
// reads (tests write it to check the migration).
func (c *Codec) encodeJSON(rec *Proxy) []byte {
	creds, sealed := c.stored(rec)
	data, _ := json.Marshal(struct {
		*Proxy
		// Shallower than Proxy's own field of the same name, so it wins.
		Credentials *model.Credentials `json:"credentials"`
		Sealed      string             `json:"sealed_credentials,omitempty"`
		Nonce       uint64             `json:"nonce"`
	}{rec, creds, sealed, rand.Uint64()})
	return data
}

// stored is how a write stores rec's credentials: in clear (creds), sealed
// (sealed), or neither; it records on rec how they are now stored.
func (c *Codec) stored(rec *Proxy) (creds *model.Credentials, sealed string) {
	creds = rec.Credentials
	switch {
	case rec.CredentialsUnreadable():
		// Unreadable here and not replaced: carried on as it is.
		creds, sealed = nil, rec.sealed.blob
	case creds != nil && c.ring != nil:
		plain, _ := json.Marshal(creds)
		creds, sealed = nil, c.ring.Seal(plain, aad(rec.ID))
		rec.sealed = c.states[c.ring.Primary()]
	default:
		rec.sealed = nil
	}
	return creds, sealed
}

// Decode reads a proxy record as Encode wrote it, with or without a key,
// in the binary layout or in the JSON written before it.
// Sealed credentials that no key of the codec opens are no error: the
// record comes back with CredentialsUnreadable set.
func (c *Codec) Decode(data []byte) (*Proxy, error) {
	rec, sealed, err := c.decodeStored(data)
	if err != nil {
		return nil, err
	}
	if sealed != "" {
		c.open(rec, sealed)
	}
	return rec, nil
}

// decodeStored reads either format, credentials as stored.
func (c *Codec) decodeStored(data []byte) (*Proxy, string, error) {
	if len(data) > 0 && data[0] == formatV1 {
		return decodeBinary(data, c.strs)
	}
	// Layout versions are control bytes; JSON starts with '{' (or space).
	if len(data) > 0 && data[0] < ' ' && data[0] != '\t' && data[0] != '\n' && data[0] != '\r' {
		return nil, "", fmt.Errorf("proxy record of an unknown layout (version %d)", data[0])
	}
	rec := new(Proxy)
	w := struct {
		*Proxy
		Sealed string `json:"sealed_credentials"`
	}{Proxy: rec}
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, "", fmt.Errorf("decode proxy record (JSON): %w", err)
	}
	return rec, w.Sealed, nil
}

// open decrypts sealed into rec, or keeps it as it is when no key of the
// codec opens it.
func (c *Codec) open(rec *Proxy, sealed string) {
	rec.Credentials = nil
	plain, err := c.ring.Open(sealed, aad(rec.ID))
	if err == nil {
		var creds model.Credentials
		if err = json.Unmarshal(plain, &creds); err == nil {
			rec.Credentials = &creds
			rec.sealed = c.states[credkey.KeyID(sealed)]
			return
		}
	}
	rec.sealed = &sealState{keyID: credkey.KeyID(sealed), blob: sealed}
}

// Current reports whether rec is stored as the codec would write it now:
// credentials (if any) sealed under the first key, or in clear for a codec
// without keys. An unreadable record is not current.
func (c *Codec) Current(rec *Proxy) bool {
	switch {
	case rec.CredentialsUnreadable():
		return false
	case rec.Credentials == nil:
		return true
	case c.ring == nil:
		return rec.sealed == nil
	}
	return rec.sealed != nil && rec.sealed.keyID == c.ring.Primary()
}

// CredentialsUnreadable reports whether rec's credentials are sealed under
// a key this worker does not have (or were damaged): Credentials is then
// nil, which is not what the proxy has, so rec must not be leased or shown.
// Credentials set on such a record replace what could not be read.
func (r *Proxy) CredentialsUnreadable() bool {
	return r.sealed != nil && r.sealed.blob != "" && r.Credentials == nil
}

// CredentialsKeyID is the id of the key rec's stored credentials are
// sealed under, "" when they are in clear or there are none.
func (r *Proxy) CredentialsKeyID() string {
	if r.sealed == nil {
		return ""
	}
	return r.sealed.keyID
}

// ReplaceCredentials sets rec's credentials (nil: none), forgetting how
// the stored version kept them: the next write stores the new ones.
func (r *Proxy) ReplaceCredentials(c *model.Credentials) {
	r.Credentials = c
	r.sealed = nil
}
