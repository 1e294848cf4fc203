package forge

import (
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/forge-remote/forge-remote/internal/jsonread"
)

// The decoders below read a FIT's header and claims in one pass, without
// reflection, into exactly what encoding/json (through golang-jwt's parser)
// would produce for the same bytes: FuzzDecodeClaims and FuzzDecodeHeader hold
// them to that, error for error and field for field. They earn their keep:
// with the prepared RS256 verify in place, json.Unmarshal instead cost 36%
// more server CPU per request under bench/load (103.8 against 76.1 µs, four
// runs each side by side; bench/README.md, "What the hand-written code earns").

// claimReader decodes the claims' structure on a jsonread.Reader.
type claimReader struct{ jsonread.Reader }

var (
	claimNames        = []string{"iss", "aud", "exp", "nbf", "iat", "app", "context", "principal"}
	appNames          = []string{"installationId", "apiBaseUrl", "appVersion", "environment", "module", "installation", "license"}
	typeIDNames       = []string{"type", "id"}
	keyNames          = []string{"key"}
	installationNames = []string{"contexts"}
	contextNames      = []string{"cloudId"}
	licenseNames      = []string{"active", "isActive"}
	invocationNames   = []string{"cloudId", "moduleKey", "siteUrl", "localId", "accountId", "extension", "userAccess"}
	extensionNames    = []string{"type", "content", "space"}
	idKeyNames        = []string{"id", "key"}
	userAccessNames   = []string{"enabled", "hasAccess"}
)

// numericDate decodes a claim of type *jwt.NumericDate as golang-jwt's
// UnmarshalJSON does: a number (or a string holding one) of seconds, the
// fraction kept to TimePrecision; null sets it to nil.
func (r *claimReader) numericDate(dst **jwt.NumericDate) error {
	switch c := r.Peek(); {
	case c == 'n':
		*dst = nil
		_, err := r.Null()
		return err
	case c == '-' || c >= '0' && c <= '9':
		lit, err := r.Number()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(string(lit), 64)
		if err != nil {
			return jsonread.ErrType
		}
		round, frac := math.Modf(f)
		*dst = jwt.NewNumericDate(time.Unix(int64(round), int64(frac*1e9)))
		return nil
	default:
		// Strings and the rest: golang-jwt's own decoding, error for error.
		raw, err := r.SkipRaw()
		if err != nil {
			return err
		}
		if *dst == nil {
			*dst = new(jwt.NumericDate)
		}
		if err := (*dst).UnmarshalJSON(raw); err != nil {
			return jsonread.ErrType
		}
		return nil
	}
}

// audience decodes `aud` as jwt.ClaimStrings does: a string, or an array of
// strings; null leaves it as it is.
func (r *claimReader) audience(dst *jwt.ClaimStrings) error {
	switch r.Peek() {
	case 'n':
		_, err := r.Null()
		return err
	case '"':
		var s string
		if err := r.String(&s); err != nil {
			return err
		}
		*dst = jwt.ClaimStrings{s}
		return nil
	case '[':
		var aud jwt.ClaimStrings
		bad := false
		err := r.Array(func() error {
			if r.Peek() != '"' {
				bad = true // encoding/json still reads the rest
				return r.Skip()
			}
			var s string
			if err := r.String(&s); err != nil {
				return err
			}
			aud = append(aud, s)
			return nil
		})
		if err != nil {
			return err
		}
		if bad {
			return jsonread.ErrType
		}
		*dst = aud
		return nil
	}
	return r.WrongType()
}

// decodeClaims decodes a FIT's claims (JSON, already base64-decoded) into
// inv, sharing repeated strings through in (nil: none).
func decodeClaims(data []byte, inv *Invocation, in *jsonread.Interner) error {
	r := &claimReader{jsonread.NewReader(data)}
	r.Intern = in
	err := r.Object(func(k []byte) error {
		switch jsonread.Canonical(k, claimNames) {
		case "iss":
			return r.String(&inv.Issuer)
		case "aud":
			return r.audience(&inv.Audience)
		case "exp":
			return r.numericDate(&inv.ExpiresAt)
		case "nbf":
			return r.numericDate(&inv.NotBefore)
		case "iat":
			return r.numericDate(&inv.IssuedAt)
		case "app":
			return r.app(&inv.App)
		case "context":
			return r.invocationCtx(&inv.Context)
		case "principal":
			return r.UniqueString(&inv.Principal)
		}
		return r.Skip()
	})
	if err != nil {
		return err
	}
	return r.End()
}

func (r *claimReader) app(a *App) error {
	return r.Object(func(k []byte) error {
		switch jsonread.Canonical(k, appNames) {
		case "installationId":
			return r.String(&a.InstallationID)
		case "apiBaseUrl":
			return r.String(&a.APIBaseURL)
		case "appVersion":
			return r.String(&a.AppVersion)
		case "environment":
			return r.Object(func(k []byte) error {
				switch jsonread.Canonical(k, typeIDNames) {
				case "type":
					return r.String(&a.Environment.Type)
				case "id":
					return r.String(&a.Environment.ID)
				}
				return r.Skip()
			})
		case "module":
			return r.Object(func(k []byte) error {
				switch jsonread.Canonical(k, keyNames) {
				case "key":
					return r.String(&a.Module.Key)
				}
				return r.Skip()
			})
		case "installation":
			if null, err := r.Null(); null || err != nil {
				a.Installation = nil
				return err
			}
			if a.Installation == nil && r.Peek() == '{' {
				a.Installation = new(Installation)
			}
			return r.installation(a.Installation)
		case "license":
			if null, err := r.Null(); null || err != nil {
				a.License = nil
				return err
			}
			if a.License == nil && r.Peek() == '{' {
				a.License = new(License)
			}
			return r.license(a.License)
		}
		return r.Skip()
	})
}

func (r *claimReader) installation(in *Installation) error {
	if in == nil { // not an object
		return r.WrongType()
	}
	return r.Object(func(k []byte) error {
		switch jsonread.Canonical(k, installationNames) {
		case "contexts":
			return r.contexts(&in.Contexts)
		}
		return r.Skip()
	})
}

// contexts decodes an array into *dst the way encoding/json decodes into a
// slice: element i into the existing element i (within capacity), the slice
// cut to the array's length, an empty array giving an empty non-nil slice.
func (r *claimReader) contexts(dst *[]InstallationContext) error {
	switch r.Peek() {
	case 'n':
		*dst = nil
		_, err := r.Null()
		return err
	case '[':
	default:
		return r.WrongType()
	}
	s := *dst
	i := 0
	err := r.Array(func() error {
		if i >= cap(s) {
			s = append(s[:cap(s)], InstallationContext{})
		}
		if i >= len(s) {
			s = s[:i+1]
		}
		c := &s[i]
		i++
		return r.Object(func(k []byte) error {
			switch jsonread.Canonical(k, contextNames) {
			case "cloudId":
				return r.String(&c.CloudID)
			}
			return r.Skip()
		})
	})
	if err != nil {
		return err // the claims are refused: what *dst holds no longer matters
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

func (r *claimReader) license(l *License) error {
	if l == nil { // not an object
		return r.WrongType()
	}
	return r.Object(func(k []byte) error {
		switch jsonread.Canonical(k, licenseNames) {
		case "active":
			return r.optionalBool(&l.Active)
		case "isActive":
			return r.optionalBool(&l.IsActive)
		}
		return r.Skip()
	})
}

func (r *claimReader) invocationCtx(c *InvocationContext) error {
	return r.Object(func(k []byte) error {
		switch jsonread.Canonical(k, invocationNames) {
		case "cloudId":
			return r.String(&c.CloudID)
		case "moduleKey":
			return r.String(&c.ModuleKey)
		case "siteUrl":
			return r.String(&c.SiteURL)
		case "localId":
			return r.String(&c.LocalID)
		case "accountId":
			return r.UniqueString(&c.AccountID)
		case "extension":
			return r.extension(&c.Extension)
		case "userAccess":
			if null, err := r.Null(); null || err != nil {
				c.UserAccess = nil
				return err
			}
			if r.Peek() != '{' {
				return r.WrongType()
			}
			if c.UserAccess == nil {
				c.UserAccess = new(UserAccess)
			}
			ua := c.UserAccess
			return r.Object(func(k []byte) error {
				switch jsonread.Canonical(k, userAccessNames) {
				case "enabled":
					return r.Bool(&ua.Enabled)
				case "hasAccess":
					return r.Bool(&ua.HasAccess)
				}
				return r.Skip()
			})
		}
		return r.Skip()
	})
}

func (r *claimReader) extension(e *Extension) error {
	return r.Object(func(k []byte) error {
		switch jsonread.Canonical(k, extensionNames) {
		case "type":
			return r.String(&e.Type)
		case "content":
			return r.Object(func(k []byte) error {
				switch jsonread.Canonical(k, typeIDNames) {
				case "id":
					return r.UniqueString(&e.Content.ID)
				case "type":
					return r.String(&e.Content.Type)
				}
				return r.Skip()
			})
		case "space":
			return r.Object(func(k []byte) error {
				switch jsonread.Canonical(k, idKeyNames) {
				case "id":
					return r.String(&e.Space.ID)
				case "key":
					return r.String(&e.Space.Key)
				}
				return r.Skip()
			})
		}
		return r.Skip()
	})
}

// optionalBool decodes into a *bool as encoding/json does: null sets nil, a
// boolean allocates (or reuses) the target.
func (r *claimReader) optionalBool(dst **bool) error {
	if null, err := r.Null(); null || err != nil {
		*dst = nil
		return err
	}
	switch r.Peek() {
	case 't', 'f':
		if *dst == nil {
			*dst = new(bool)
		}
		return r.Bool(*dst)
	}
	return r.WrongType()
}

// joseHeader is what a FIT's header says that verification uses.
type joseHeader struct {
	alg, kid string // "" when absent or not a string
}

// decodeHeader reads a JOSE header as golang-jwt did (into a map, names
// matched exactly): the last `alg` and `kid` win, non-strings count as absent.
func decodeHeader(data []byte, h *joseHeader) error {
	r := jsonread.NewReader(data)
	err := r.Object(func(k []byte) error {
		var dst *string
		switch string(k) {
		case "alg":
			dst = &h.alg
		case "kid":
			dst = &h.kid
		default:
			return r.Skip()
		}
		*dst = ""
		if r.Peek() != '"' {
			return r.Skip()
		}
		return r.String(dst)
	})
	if err != nil {
		return err
	}
	return r.End()
}
