// Package resolvers maps Forge resolver function keys to handlers and decodes
// both ways Forge reaches them: a payload body, or the @forge/resolver envelope.
package resolvers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/forge-remote/forge-remote/forge"
)

// Handler answers one resolver call. The invocation is the verified FIT: the
// only source of identity. payload is the JSON the frontend sent (may be
// empty), as read: nothing has decoded it yet, so the handler decodes it once
// (Decoded does). The answer is written as encoding/json marshals it.
type Handler func(ctx context.Context, inv *forge.Invocation, payload json.RawMessage) (any, error)

// Decoded is the Handler that decodes the payload into a Req, the payload's
// one decoding, before anything else, and passes it to h. An empty or null
// payload leaves Req zero; anything but a JSON object Req can hold is a
// *BadRequestError.
func Decoded[Req any](h func(ctx context.Context, inv *forge.Invocation, req Req) (any, error)) Handler {
	return func(ctx context.Context, inv *forge.Invocation, payload json.RawMessage) (any, error) {
		var req Req
		if err := DecodePayload(payload, &req); err != nil {
			return nil, err
		}
		return h(ctx, inv, req)
	}
}

// Errors server/ maps to status codes.
var (
	ErrUnknownResolver = errors.New("resolvers: unknown resolver")
	// ErrNoUser: the FIT has no principal (a trigger or function call), and the
	// resolver answers only for a signed-in user.
	ErrNoUser = errors.New("resolvers: the invocation has no user")
	// ErrAnonymous: the FIT's principal is Forge's anonymous viewer. Every
	// anonymous viewer shares that one accountId, so none may have a Weavy
	// identity.
	ErrAnonymous = errors.New("resolvers: the viewer is not signed in")
	// ErrLicenseInactive: the FIT carries the app's licence and it is not
	// active (or user-based billing gives this user no access).
	ErrLicenseInactive = errors.New("resolvers: the app's licence is not active")
)

// RequireUser is the gate of every resolver that acts for a person: a
// principal that is signed in, on an installation whose licence (when Forge
// states one) is active. It needs no I/O, so a refused call costs nothing
// downstream.
func RequireUser(inv *forge.Invocation) error {
	switch {
	case inv.Principal == "":
		return ErrNoUser
	case inv.Anonymous():
		return ErrAnonymous
	case inv.LicenseInactive():
		return ErrLicenseInactive
	}
	return nil
}

// UnknownResolverError is a call to a function key nothing is registered
// for; it matches ErrUnknownResolver with errors.Is.
type UnknownResolverError struct{ FunctionKey string }

func (e *UnknownResolverError) Error() string {
	return fmt.Sprintf("resolvers: unknown resolver %q", e.FunctionKey)
}

// Is makes errors.Is(err, ErrUnknownResolver) true.
func (e *UnknownResolverError) Is(target error) bool { return target == ErrUnknownResolver }

// BadRequestError is a payload or envelope the resolver cannot use. Msg is
// for the caller; Err, when set, is the cause, reachable with errors.Is and
// errors.As (a *json.SyntaxError, chat.ErrBadTarget) but never shown.
type BadRequestError struct {
	Msg string
	Err error
}

func (e *BadRequestError) Error() string { return "resolvers: " + e.Msg }

func (e *BadRequestError) Unwrap() error { return e.Err }

// Registry is the set of resolvers. Register everything before serving; it is
// read-only afterwards and needs no lock.
type Registry struct {
	handlers map[string]Handler
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{handlers: make(map[string]Handler)} }

// Register adds a handler; registering a key twice is a programming error.
func (r *Registry) Register(functionKey string, h Handler) {
	if _, dup := r.handlers[functionKey]; dup {
		panic(fmt.Sprintf("resolvers: %q registered twice", functionKey))
	}
	r.handlers[functionKey] = h
}

// Invoke runs the resolver named functionKey.
func (r *Registry) Invoke(ctx context.Context, functionKey string, inv *forge.Invocation, payload json.RawMessage) (any, error) {
	h, ok := r.handlers[functionKey]
	if !ok {
		return nil, &UnknownResolverError{FunctionKey: functionKey}
	}
	return h(ctx, inv, payload)
}

// Envelope is what @forge/resolver functions receive; POST /resolvers accepts it
// so code written for invoke('token', …) can be pointed at the remote. Only
// call.functionKey and call.payload are read: the envelope's context (the
// context that counts is inside the verified FIT), call.jobId and whatever
// else it holds are ignored, whatever their type.
type Envelope struct {
	Call struct {
		FunctionKey string          `json:"functionKey"`
		Payload     json.RawMessage `json:"payload"`
	} `json:"call"`
}

// ParseEnvelope decodes an envelope body into its function key and payload,
// in one pass: the payload is left for its resolver to decode.
func ParseEnvelope(body []byte) (string, json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", nil, &BadRequestError{Msg: "empty body"}
	}
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return "", nil, &BadRequestError{Msg: "malformed body: " + jsonProblem(err), Err: err}
		}
		return "", nil, &BadRequestError{Msg: "malformed envelope: " + jsonProblem(err), Err: err}
	}
	if env.Call.FunctionKey == "" {
		return "", nil, &BadRequestError{Msg: "envelope has no call.functionKey"}
	}
	return env.Call.FunctionKey, env.Call.Payload, nil
}

// DecodePayload decodes payload into v; an empty or null payload leaves v as is.
func DecodePayload(payload json.RawMessage, v any) error {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 || bytes.Equal(p, []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(p, v); err != nil {
		return &BadRequestError{Msg: "malformed payload: " + jsonProblem(err), Err: err}
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the input.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Sprintf("it must be %s, not %s", jsonType(te.Type), article(te.Value))
		}
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, jsonType(te.Type), article(te.Value))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at offset %d", se.Offset)
	}
	return "invalid JSON"
}

// jsonType names the JSON type a Go type decodes from.
func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return jsonType(t.Elem())
	}
	return "another type"
}

// article turns encoding/json's description of the value it met ("string",
// "number", "number 1.5", "array", "object", "bool") into words.
func article(v string) string {
	v, _, _ = strings.Cut(v, " ")
	switch v {
	case "array", "object":
		return "an " + v
	case "bool":
		return "a boolean"
	case "string", "number":
		return "a " + v
	}
	return v
}
