package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/pharox/pharox-nats/model"
)

// Decode reads a request body into T the way every endpoint does: an empty
// body is {}, the body must be one UTF-8 JSON object, field names match
// exactly (case included), and an unknown or repeated field is refused
// with its name in the message.
//
// encoding/json matches names case-insensitively and lets a repeated name
// overwrite the first, so {"force":false,"FORCE":true} would delete with
// force. The json/v2 API (github.com/go-json-experiment/json, the module
// Go's encoding/json/v2 comes from) matches exactly and refuses duplicate
// names; the model types' nested decoders (model.Optional,
// model.HealthCheckOptions) take the same options through the decoder.
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
	if err := jsonv2.Unmarshal(trimmed, &v, jsonv2.RejectUnknownMembers(true)); err != nil {
		if trailing(trimmed) {
			return v, model.Errorf(model.ErrBadRequest, "request body has data after its JSON object")
		}
		return v, model.Errorf(model.ErrBadRequest, "%s", describe(err))
	}
	return v, nil
}

// trailing reports whether body starts with one well-formed JSON value and
// has more after it (only asked once decoding failed).
func trailing(body []byte) bool {
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if _, err := dec.ReadValue(); err != nil {
		return false
	}
	_, err := dec.ReadToken()
	return !errors.Is(err, io.EOF)
}

// describe words a decoding error for a client: which field, what was wrong.
func describe(err error) string {
	var semErr *jsonv2.SemanticError
	var synErr *jsontext.SyntacticError
	switch {
	case errors.As(err, &synErr):
		switch {
		case errors.Is(synErr.Err, jsontext.ErrDuplicateName):
			return fmt.Sprintf("json: duplicate field %q%s", synErr.JSONPointer.LastToken(), within(synErr.JSONPointer))
		case errors.Is(synErr.Err, io.ErrUnexpectedEOF):
			return "malformed JSON: unexpected end of input"
		}
		return fmt.Sprintf("malformed JSON at byte %d: %v", synErr.ByteOffset, synErr.Err)
	case errors.As(err, &semErr):
		if errors.Is(semErr.Err, jsonv2.ErrUnknownName) {
			// As encoding/json words it, the name verbatim: `json: unknown field "pool"`.
			return fmt.Sprintf("json: unknown field %q%s", semErr.JSONPointer.LastToken(), within(semErr.JSONPointer))
		}
		field := path(semErr.JSONPointer)
		if field == "" {
			field = "value"
		}
		if semErr.GoType != nil && semErr.JSONKind != 0 {
			got := "JSON " + semErr.JSONKind.String()
			if semErr.JSONKind == '0' && len(semErr.JSONValue) > 0 {
				got += " " + string(semErr.JSONValue)
			}
			return fmt.Sprintf("field %q must be %s, got %s", field, jsonKind(semErr.GoType), got)
		}
		if semErr.Err != nil {
			return fmt.Sprintf("field %q: %v", field, semErr.Err)
		}
	}
	return err.Error()
}

// within names the object holding the field p points at, when it is not
// the body itself.
func within(p jsontext.Pointer) string {
	if parent := path(p.Parent()); parent != "" {
		return " in " + parent
	}
	return ""
}

// path writes a JSON pointer the way messages name fields:
// /proxies/5/port is proxies[5].port.
func path(p jsontext.Pointer) string {
	var b strings.Builder
	for tok := range p.Tokens() {
		if tok != "" && strings.Trim(tok, "0123456789") == "" {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	return b.String()
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "of another type"
}
