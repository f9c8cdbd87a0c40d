package model

import "github.com/google/uuid"

// ValidID reports whether id is an id as the workers issue them: a UUID in
// its canonical form, 36 characters of lower-case hex and hyphens. Other
// spellings of a UUID that uuid.Parse also takes (upper case, braces,
// "urn:uuid:", no hyphens) are not ids: they name nothing.
func ValidID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}
