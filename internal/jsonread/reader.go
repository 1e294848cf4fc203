// Package jsonread decodes JSON in one pass without reflection, into exactly
// what encoding/json would produce for the same bytes. It serves hot paths
// where encoding/json's cost matters (a FIT's claims on every request): that
// validates the whole input before decoding it and walks the destination by
// reflection.
//
// What encoding/json does and a decoder built on Reader copies: member names
// match their field exactly or else case-insensitively (Canonical); a
// repeated name decodes again into the same field (objects and slices merge,
// pointers are reused); null leaves a field as it is, except a pointer, which
// it sets to nil; unknown members are skipped but must be valid JSON; nesting
// deeper than 10,000 is an error. Strings with escapes or bytes that are not
// UTF-8 are unquoted by encoding/json itself. Each decoder built on Reader
// has a fuzz test holding it to encoding/json.
package jsonread

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

var (
	ErrSyntax  = errors.New("invalid JSON")
	ErrTooDeep = errors.New("JSON nested too deeply")
	ErrType    = errors.New("JSON value of the wrong type for its claim")
)

// Reader is a cursor over one JSON text. Set Intern to share the strings it
// decodes (String) among readers.
type Reader struct {
	data   []byte
	pos    int
	depth  int
	Intern *Interner
}

// NewReader reads data.
func NewReader(data []byte) Reader { return Reader{data: data} }

func (r *Reader) skipSpace() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// Peek is the next non-space byte, 0 at the end.
func (r *Reader) Peek() byte {
	r.skipSpace()
	if r.pos < len(r.data) {
		return r.data[r.pos]
	}
	return 0
}

// End checks that only white space follows the value just read.
func (r *Reader) End() error {
	if r.Peek() != 0 || r.pos != len(r.data) {
		return ErrSyntax
	}
	return nil
}

// Null consumes a null literal if one is next.
func (r *Reader) Null() (bool, error) {
	if r.Peek() != 'n' {
		return false, nil
	}
	return true, r.literal("null")
}

func (r *Reader) literal(lit string) error {
	if len(r.data)-r.pos < len(lit) || string(r.data[r.pos:r.pos+len(lit)]) != lit {
		return ErrSyntax
	}
	r.pos += len(lit)
	return nil
}

// Open consumes the opening bracket of an object or array.
func (r *Reader) Open(b byte) error {
	if r.Peek() != b {
		return ErrType
	}
	r.pos++
	if r.depth++; r.depth > maxDepth {
		return ErrTooDeep
	}
	return nil
}

// Next advances to the next element of the object or array just opened:
// false (and the closing bracket consumed) when there is none. n counts the
// elements so far.
func (r *Reader) Next(closing byte, n *int) (bool, error) {
	c := r.Peek()
	if c == closing {
		r.pos++
		r.depth--
		return false, nil
	}
	if *n > 0 {
		if c != ',' {
			return false, ErrSyntax
		}
		r.pos++
		if r.Peek() == closing { // no trailing comma
			return false, ErrSyntax
		}
	}
	*n++
	return true, nil
}

// Key reads an object member's name and its colon. raw is the name as written
// when it has no escapes and is valid UTF-8, else its unquoted form.
func (r *Reader) Key() ([]byte, error) {
	if r.Peek() != '"' {
		return nil, ErrSyntax
	}
	raw, plain, err := r.rawString()
	if err != nil {
		return nil, err
	}
	if r.Peek() != ':' {
		return nil, ErrSyntax
	}
	r.pos++
	if plain {
		return raw[1 : len(raw)-1], nil
	}
	s, err := Unquote(raw)
	return []byte(s), err
}

// Unquote decodes a string literal that has escapes or bytes that are not
// UTF-8 with encoding/json itself (the rare case).
func Unquote(raw []byte) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", ErrSyntax
	}
	return s, nil
}

// rawString consumes a string literal (quotes included). plain means it has
// no escape and is valid UTF-8, so its bytes between the quotes are its value.
func (r *Reader) rawString() (raw []byte, plain bool, err error) {
	start, d := r.pos, r.data
	i := r.pos + 1 // past the opening quote
	plain, ascii := true, true
	for {
		for i < len(d) && plainByte[d[i]] {
			i++
		}
		if i >= len(d) {
			return nil, false, ErrSyntax
		}
		switch c := d[i]; {
		case c == '"':
			r.pos = i + 1
			raw = d[start:r.pos]
			if !ascii && plain {
				plain = utf8.Valid(raw)
			}
			return raw, plain, nil
		case c == '\\':
			plain = false
			r.pos = i
			if err := r.escape(); err != nil {
				return nil, false, err
			}
			i = r.pos
		case c < 0x20:
			return nil, false, ErrSyntax
		default: // c >= utf8.RuneSelf
			ascii = false
			i++
		}
	}
}

// plainByte is true for the bytes a string literal holds as they are and
// that need no second look: printable ASCII but the quote and the backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// escape checks the escape sequence at r.pos (a backslash) and skips it.
func (r *Reader) escape() error {
	if r.pos+1 >= len(r.data) {
		return ErrSyntax
	}
	switch r.data[r.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		r.pos += 2
		return nil
	case 'u':
		if r.pos+6 > len(r.data) {
			return ErrSyntax
		}
		for _, h := range r.data[r.pos+2 : r.pos+6] {
			if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
				return ErrSyntax
			}
		}
		r.pos += 6
		return nil
	}
	return ErrSyntax
}

// String decodes a string value into *dst, through r.Intern when set; null
// leaves *dst as it is.
func (r *Reader) String(dst *string) error {
	return r.str(dst, r.Intern)
}

// UniqueString is String for values that rarely repeat (ids of one request),
// which would only push shared strings out of the Interner.
func (r *Reader) UniqueString(dst *string) error {
	return r.str(dst, nil)
}

func (r *Reader) str(dst *string, in *Interner) error {
	switch r.Peek() {
	case '"':
		raw, plain, err := r.rawString()
		if err != nil {
			return err
		}
		if plain {
			*dst = in.string(raw[1 : len(raw)-1])
			return nil
		}
		*dst, err = Unquote(raw)
		return err
	case 'n':
		return r.literal("null")
	}
	return r.WrongType()
}

// Bool decodes true or false into *dst; null leaves it as it is.
func (r *Reader) Bool(dst *bool) error {
	switch r.Peek() {
	case 't':
		*dst = true
		return r.literal("true")
	case 'f':
		*dst = false
		return r.literal("false")
	case 'n':
		return r.literal("null")
	}
	return r.WrongType()
}

// WrongType is the error for a value of the wrong type; the value must still
// be valid JSON, since encoding/json reports a syntax error first.
func (r *Reader) WrongType() error {
	if err := r.Skip(); err != nil {
		return err
	}
	return ErrType
}

// Number consumes a number literal and returns it.
func (r *Reader) Number() ([]byte, error) {
	start, d := r.pos, r.data
	i := r.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return nil, ErrSyntax
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return nil, ErrSyntax
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return nil, ErrSyntax
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	r.pos = i
	return d[start:i], nil
}

// SkipRaw is Skip that also returns the value's bytes.
func (r *Reader) SkipRaw() ([]byte, error) {
	r.skipSpace()
	start := r.pos
	if err := r.Skip(); err != nil {
		return nil, err
	}
	return r.data[start:r.pos], nil
}

// Skip consumes any one value, checking it is valid JSON.
func (r *Reader) Skip() error {
	switch c := r.Peek(); {
	case c == '"':
		_, _, err := r.rawString()
		return err
	case c == '{':
		return r.Object(func([]byte) error { return r.Skip() })
	case c == '[':
		return r.Array(r.Skip)
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		_, err := r.Number()
		return err
	}
	return ErrSyntax
}

// Array decodes the elements of the array that comes next (the caller has
// seen its '[') with elem, which reads one element each time.
func (r *Reader) Array(elem func() error) error {
	if err := r.Open('['); err != nil {
		return err
	}
	for n := 0; ; {
		more, err := r.Next(']', &n)
		if err != nil || !more {
			return err
		}
		if err := elem(); err != nil {
			return err
		}
	}
}

// Object decodes the members of an object with member: null leaves the
// destination as it is (the caller handles pointers), another type is an error.
func (r *Reader) Object(member func(key []byte) error) error {
	if null, err := r.Null(); null || err != nil {
		return err
	}
	if r.Peek() != '{' {
		return r.WrongType()
	}
	if err := r.Open('{'); err != nil {
		return err
	}
	for n := 0; ; {
		more, err := r.Next('}', &n)
		if err != nil || !more {
			return err
		}
		k, err := r.Key()
		if err != nil {
			return err
		}
		if err := member(k); err != nil {
			return err
		}
	}
}

// Canonical is the name in names that key matches as encoding/json matches
// member names to fields (exactly, else case-insensitively), "" for none.
func Canonical(key []byte, names []string) string {
	for _, n := range names {
		if string(key) == n {
			return n
		}
	}
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return n
		}
	}
	return ""
}
