package forge

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// The decoders below read a FIT's header and claims in one pass, without
// reflection, into exactly what encoding/json would produce for the same bytes
// (FuzzDecodeClaims holds them to that, error for error and field for field).
// encoding/json was a quarter of the server's CPU per request: it validates
// the whole input before decoding it, walks the struct by reflection, and
// golang-jwt decoded the header into a map first.
//
// What encoding/json does and these decoders copy: keys match their field
// case-insensitively (bytes.EqualFold); a repeated key decodes again into the
// same field (objects and slices merge, pointers are reused); null leaves a
// field as it is, except a pointer, which it sets to nil; unknown keys are
// skipped but must be valid JSON; nesting deeper than 10,000 is an error.
// Strings with escapes or non-ASCII bytes take encoding/json's own unquoting.

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

var (
	errSyntax   = errors.New("invalid JSON")
	errTooDeep  = errors.New("JSON nested too deeply")
	errJSONType = errors.New("JSON value of the wrong type for its claim")
)

// jsonReader is a cursor over one JSON text.
type jsonReader struct {
	data  []byte
	pos   int
	depth int
}

func (r *jsonReader) skipSpace() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

// peek is the next non-space byte, 0 at the end.
func (r *jsonReader) peek() byte {
	r.skipSpace()
	if r.pos < len(r.data) {
		return r.data[r.pos]
	}
	return 0
}

// end checks that only white space follows the value just read.
func (r *jsonReader) end() error {
	if r.peek() != 0 || r.pos != len(r.data) {
		return errSyntax
	}
	return nil
}

// null consumes a null literal if one is next.
func (r *jsonReader) null() (bool, error) {
	if r.peek() != 'n' {
		return false, nil
	}
	return true, r.literal("null")
}

func (r *jsonReader) literal(lit string) error {
	if len(r.data)-r.pos < len(lit) || string(r.data[r.pos:r.pos+len(lit)]) != lit {
		return errSyntax
	}
	r.pos += len(lit)
	return nil
}

// open consumes the opening bracket of an object or array.
func (r *jsonReader) open(b byte) error {
	if r.peek() != b {
		return errJSONType
	}
	r.pos++
	if r.depth++; r.depth > maxDepth {
		return errTooDeep
	}
	return nil
}

// next advances to the next element of the object or array just opened:
// false (and the closing bracket consumed) when there is none. n counts the
// elements so far.
func (r *jsonReader) next(closing byte, n *int) (bool, error) {
	c := r.peek()
	if c == closing {
		r.pos++
		r.depth--
		return false, nil
	}
	if *n > 0 {
		if c != ',' {
			return false, errSyntax
		}
		r.pos++
		if r.peek() == closing { // no trailing comma
			return false, errSyntax
		}
	}
	*n++
	return true, nil
}

// key reads an object member's name and its colon. raw is the name as written
// when it has no escapes and is valid UTF-8, else its unquoted form.
func (r *jsonReader) key() ([]byte, error) {
	if r.peek() != '"' {
		return nil, errSyntax
	}
	raw, plain, err := r.rawString()
	if err != nil {
		return nil, err
	}
	if r.peek() != ':' {
		return nil, errSyntax
	}
	r.pos++
	if plain {
		return raw[1 : len(raw)-1], nil
	}
	s, err := unquote(raw)
	return []byte(s), err
}

// unquote decodes a string literal that has escapes or bytes that are not
// UTF-8 with encoding/json itself (the rare case).
func unquote(raw []byte) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errSyntax
	}
	return s, nil
}

// rawString consumes a string literal (quotes included). plain means it has
// no escape and is valid UTF-8, so its bytes between the quotes are its value.
func (r *jsonReader) rawString() (raw []byte, plain bool, err error) {
	start := r.pos
	r.pos++ // opening quote
	plain, ascii := true, true
	for r.pos < len(r.data) {
		c := r.data[r.pos]
		switch {
		case c == '"':
			r.pos++
			raw = r.data[start:r.pos]
			if !ascii && plain {
				plain = utf8.Valid(raw)
			}
			return raw, plain, nil
		case c == '\\':
			plain = false
			if err := r.escape(); err != nil {
				return nil, false, err
			}
			continue
		case c < 0x20:
			return nil, false, errSyntax
		case c >= utf8.RuneSelf:
			ascii = false
		}
		r.pos++
	}
	return nil, false, errSyntax
}

// escape checks the escape sequence at r.pos (a backslash) and skips it.
func (r *jsonReader) escape() error {
	if r.pos+1 >= len(r.data) {
		return errSyntax
	}
	switch r.data[r.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		r.pos += 2
		return nil
	case 'u':
		if r.pos+6 > len(r.data) {
			return errSyntax
		}
		for _, h := range r.data[r.pos+2 : r.pos+6] {
			if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
				return errSyntax
			}
		}
		r.pos += 6
		return nil
	}
	return errSyntax
}

// str decodes a string value into *dst; null leaves it as it is.
func (r *jsonReader) str(dst *string) error {
	switch r.peek() {
	case '"':
		raw, plain, err := r.rawString()
		if err != nil {
			return err
		}
		if plain {
			*dst = string(raw[1 : len(raw)-1])
			return nil
		}
		*dst, err = unquote(raw)
		return err
	case 'n':
		return r.literal("null")
	}
	return r.wrongType()
}

// boolean decodes true or false into *dst; null leaves it as it is.
func (r *jsonReader) boolean(dst *bool) error {
	switch r.peek() {
	case 't':
		*dst = true
		return r.literal("true")
	case 'f':
		*dst = false
		return r.literal("false")
	case 'n':
		return r.literal("null")
	}
	return r.wrongType()
}

// wrongType is the error for a value of the wrong type; the value must still
// be valid JSON, since encoding/json reports a syntax error first.
func (r *jsonReader) wrongType() error {
	if err := r.skip(); err != nil {
		return err
	}
	return errJSONType
}

// number consumes a number literal and returns it.
func (r *jsonReader) number() ([]byte, error) {
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
		return nil, errSyntax
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return nil, errSyntax
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
			return nil, errSyntax
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	r.pos = i
	return d[start:i], nil
}

// skip consumes any one value, checking it is valid JSON.
func (r *jsonReader) skip() error {
	switch c := r.peek(); {
	case c == '"':
		_, _, err := r.rawString()
		return err
	case c == '{':
		if err := r.open('{'); err != nil {
			return err
		}
		for n := 0; ; {
			more, err := r.next('}', &n)
			if err != nil || !more {
				return err
			}
			if _, err := r.key(); err != nil {
				return err
			}
			if err := r.skip(); err != nil {
				return err
			}
		}
	case c == '[':
		if err := r.open('['); err != nil {
			return err
		}
		for n := 0; ; {
			more, err := r.next(']', &n)
			if err != nil || !more {
				return err
			}
			if err := r.skip(); err != nil {
				return err
			}
		}
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		_, err := r.number()
		return err
	}
	return errSyntax
}

// object decodes the members of an object with member: null leaves the
// destination as it is (the caller handles pointers), another type is an error.
func (r *jsonReader) object(member func(key []byte) error) error {
	if null, err := r.null(); null || err != nil {
		return err
	}
	if r.peek() != '{' {
		return r.wrongType()
	}
	if err := r.open('{'); err != nil {
		return err
	}
	for n := 0; ; {
		more, err := r.next('}', &n)
		if err != nil || !more {
			return err
		}
		k, err := r.key()
		if err != nil {
			return err
		}
		if err := member(k); err != nil {
			return err
		}
	}
}

// canonical is the name in names that key matches as encoding/json matches
// member names to fields (exactly, else case-insensitively), "" for none.
func canonical(key []byte, names []string) string {
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

var (
	claimNames        = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "app", "context", "principal", "icLabel"}
	appNames          = []string{"id", "installationId", "apiBaseUrl", "appVersion", "environment", "module", "installation", "license"}
	typeIDNames       = []string{"type", "id"}
	typeKeyNames      = []string{"type", "key"}
	installationNames = []string{"id", "contexts"}
	contextNames      = []string{"name", "apiBaseUrl", "cloudId"}
	licenseNames      = []string{"isActive", "billingPeriod", "ceId", "supportEntitlementNumber", "type"}
	invocationNames   = []string{"cloudId", "moduleKey", "siteUrl", "localId", "accountId"}
)

// numericDate decodes a claim of type *jwt.NumericDate as golang-jwt's
// UnmarshalJSON does: a number (or a string holding one) of seconds, the
// fraction kept to TimePrecision; null sets it to nil.
func (r *jsonReader) numericDate(dst **jwt.NumericDate) error {
	switch c := r.peek(); {
	case c == 'n':
		*dst = nil
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		lit, err := r.number()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(string(lit), 64)
		if err != nil {
			return errJSONType
		}
		round, frac := math.Modf(f)
		*dst = jwt.NewNumericDate(time.Unix(int64(round), int64(frac*1e9)))
		return nil
	default:
		// Strings and the rest: golang-jwt's own decoding, error for error.
		start := r.pos
		if err := r.skip(); err != nil {
			return err
		}
		if *dst == nil {
			*dst = new(jwt.NumericDate)
		}
		if err := (*dst).UnmarshalJSON(r.data[start:r.pos]); err != nil {
			return errJSONType
		}
		return nil
	}
}

// audience decodes `aud` as jwt.ClaimStrings does: a string, or an array of
// strings; null leaves it as it is.
func (r *jsonReader) audience(dst *jwt.ClaimStrings) error {
	switch r.peek() {
	case 'n':
		return r.literal("null")
	case '"':
		var s string
		if err := r.str(&s); err != nil {
			return err
		}
		*dst = jwt.ClaimStrings{s}
		return nil
	case '[':
		if err := r.open('['); err != nil {
			return err
		}
		var aud jwt.ClaimStrings
		bad := false
		for n := 0; ; {
			more, err := r.next(']', &n)
			if err != nil {
				return err
			}
			if !more {
				break
			}
			if r.peek() != '"' {
				bad = true
				if err := r.skip(); err != nil {
					return err
				}
				continue
			}
			var s string
			if err := r.str(&s); err != nil {
				return err
			}
			aud = append(aud, s)
		}
		if bad {
			return errJSONType
		}
		*dst = aud
		return nil
	}
	return r.wrongType()
}

// decodeClaims decodes a FIT's claims (JSON, already base64-decoded) into inv.
func decodeClaims(data []byte, inv *Invocation) error {
	r := &jsonReader{data: data}
	err := r.object(func(k []byte) error {
		switch canonical(k, claimNames) {
		case "iss":
			return r.str(&inv.Issuer)
		case "sub":
			return r.str(&inv.Subject)
		case "aud":
			return r.audience(&inv.Audience)
		case "exp":
			return r.numericDate(&inv.ExpiresAt)
		case "nbf":
			return r.numericDate(&inv.NotBefore)
		case "iat":
			return r.numericDate(&inv.IssuedAt)
		case "jti":
			return r.str(&inv.ID)
		case "app":
			return r.app(&inv.App)
		case "context":
			return r.invocationCtx(&inv.Context)
		case "principal":
			return r.str(&inv.Principal)
		case "icLabel":
			return r.str(&inv.ICLabel)
		}
		return r.skip()
	})
	if err != nil {
		return err
	}
	return r.end()
}

func (r *jsonReader) app(a *App) error {
	return r.object(func(k []byte) error {
		switch canonical(k, appNames) {
		case "id":
			return r.str(&a.ID)
		case "installationId":
			return r.str(&a.InstallationID)
		case "apiBaseUrl":
			return r.str(&a.APIBaseURL)
		case "appVersion":
			return r.str(&a.AppVersion)
		case "environment":
			return r.object(func(k []byte) error {
				switch canonical(k, typeIDNames) {
				case "type":
					return r.str(&a.Environment.Type)
				case "id":
					return r.str(&a.Environment.ID)
				}
				return r.skip()
			})
		case "module":
			return r.object(func(k []byte) error {
				switch canonical(k, typeKeyNames) {
				case "type":
					return r.str(&a.Module.Type)
				case "key":
					return r.str(&a.Module.Key)
				}
				return r.skip()
			})
		case "installation":
			if null, err := r.null(); null || err != nil {
				a.Installation = nil
				return err
			}
			if a.Installation == nil && r.peek() == '{' {
				a.Installation = new(Installation)
			}
			return r.installation(a.Installation)
		case "license":
			if null, err := r.null(); null || err != nil {
				a.License = nil
				return err
			}
			if a.License == nil && r.peek() == '{' {
				a.License = new(License)
			}
			return r.license(a.License)
		}
		return r.skip()
	})
}

func (r *jsonReader) installation(in *Installation) error {
	if in == nil { // not an object
		return r.wrongType()
	}
	return r.object(func(k []byte) error {
		switch canonical(k, installationNames) {
		case "id":
			return r.str(&in.ID)
		case "contexts":
			return r.contexts(&in.Contexts)
		}
		return r.skip()
	})
}

// contexts decodes an array into *dst the way encoding/json decodes into a
// slice: element i into the existing element i (within capacity), the slice
// cut to the array's length, an empty array giving an empty non-nil slice.
func (r *jsonReader) contexts(dst *[]InstallationContext) error {
	switch r.peek() {
	case 'n':
		*dst = nil
		return r.literal("null")
	case '[':
	default:
		return r.wrongType()
	}
	if err := r.open('['); err != nil {
		return err
	}
	s := *dst
	i := 0
	for n := 0; ; {
		more, err := r.next(']', &n)
		if err != nil {
			*dst = s
			return err
		}
		if !more {
			break
		}
		if i >= cap(s) {
			s = append(s[:cap(s)], InstallationContext{})
		}
		if i >= len(s) {
			s = s[:i+1]
		}
		c := &s[i]
		if err := r.object(func(k []byte) error {
			switch canonical(k, contextNames) {
			case "name":
				return r.str(&c.Name)
			case "apiBaseUrl":
				return r.str(&c.APIBaseURL)
			case "cloudId":
				return r.str(&c.CloudID)
			}
			return r.skip()
		}); err != nil {
			*dst = s
			return err
		}
		i++
	}
	if i < len(s) {
		s = s[:i]
	}
	if i == 0 {
		s = []InstallationContext{}
	}
	*dst = s
	return nil
}

func (r *jsonReader) license(l *License) error {
	if l == nil { // not an object
		return r.wrongType()
	}
	return r.object(func(k []byte) error {
		switch canonical(k, licenseNames) {
		case "isActive":
			return r.boolean(&l.IsActive)
		case "billingPeriod":
			return r.str(&l.BillingPeriod)
		case "ceId":
			return r.str(&l.CEID)
		case "supportEntitlementNumber":
			return r.str(&l.SupportEntitlementNumber)
		case "type":
			return r.str(&l.Type)
		}
		return r.skip()
	})
}

func (r *jsonReader) invocationCtx(c *InvocationCtx) error {
	return r.object(func(k []byte) error {
		switch canonical(k, invocationNames) {
		case "cloudId":
			return r.str(&c.CloudID)
		case "moduleKey":
			return r.str(&c.ModuleKey)
		case "siteUrl":
			return r.str(&c.SiteURL)
		case "localId":
			return r.str(&c.LocalID)
		case "accountId":
			return r.str(&c.AccountID)
		}
		return r.skip()
	})
}

// joseHeader is what a FIT's header says that verification uses.
type joseHeader struct {
	alg, kid string // "" when absent or not a string
}

// decodeHeader reads a JOSE header as golang-jwt did (into a map, names
// matched exactly): the last `alg` and `kid` win, non-strings count as absent.
func decodeHeader(data []byte, h *joseHeader) error {
	r := &jsonReader{data: data}
	err := r.object(func(k []byte) error {
		var dst *string
		switch string(k) {
		case "alg":
			dst = &h.alg
		case "kid":
			dst = &h.kid
		default:
			return r.skip()
		}
		*dst = ""
		if r.peek() != '"' {
			return r.skip()
		}
		return r.str(dst)
	})
	if err != nil {
		return err
	}
	return r.end()
}
