package record

import "github.com/pharox/pharox-nats/model"

// EncodeJSON writes rec as records were written before the binary layout,
// for the tests of the migration.
func (c *Codec) EncodeJSON(rec *Proxy) []byte { return c.encodeJSON(rec) }

// Stored is how data keeps its credentials: in clear, or sealed.
func Stored(data []byte) (*model.Credentials, string, error) {
	rec, sealed, err := (&Codec{}).decodeStored(data)
	if err != nil {
		return nil, "", err
	}
	return rec.Credentials, sealed, nil
}
