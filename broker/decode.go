package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/pharox/pharox-nats/model"
)

// Decode reads a request body into T the way every endpoint does: an empty
// body is {}, the body must be one UTF-8 JSON object, and unknown fields are
// refused with their name in the message.
func Decode[T any](body []byte) (T, error) {
	var v T
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		trimmed = []byte("{}")
	}
	if !utf8.Valid(trimmed) {
		return v, model.Errorf(model.ErrBadRequest, "request body is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		return v, model.Errorf(model.ErrBadRequest, "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, model.Errorf(model.ErrBadRequest, "%s", describe(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return v, model.Errorf(model.ErrBadRequest, "request body has data after its JSON object")
	}
	return v, nil
}

// describe words a decoding error for a client: which field, what was wrong.
func describe(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "value"
		}
		return fmt.Sprintf("field %q must be %s, got JSON %s", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d: %s", syntaxErr.Offset, syntaxErr.Error())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of input"
	}
	// Unknown fields come as `json: unknown field "pool"`: keep the name verbatim.
	return err.Error()
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}
