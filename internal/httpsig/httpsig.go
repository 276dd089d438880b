// Package httpsig implements the part of RFC 9421 (HTTP Message Signatures)
// and RFC 9530 (Digest Fields) that vellum uses to authenticate requests.
//
// # Model
//
// A client holding an Ed25519 key signs each request with [Sign]. The
// signature, labelled [Label] ("sig1"), covers the request method, the
// absolute target URI and, when the request has a body, the Content-Digest
// field that Sign sets from the body. Because the digest is covered, the
// signature authenticates the body too, once the server has checked the
// digest against the body it received with [VerifyContentDigest].
//
// A server verifies in four steps, each of which must succeed:
//
//  1. [Parse] the Signature-Input and Signature fields, rebuilding the
//     signature base from the request as received and the target URI the
//     server reconstructs (scheme://Host + RequestURI);
//  2. [Policy.Check] that the signature covers what it must, is fresh, and
//     carries a nonce; look up the key named by [Signature.KeyID];
//  3. [Signature.Verify] the Ed25519 signature with that key, and
//     [VerifyContentDigest] the body if there is one;
//  4. [NonceCache.Check] that the (keyid, nonce) pair has not been seen
//     before, to reject replays within the freshness window.
//
// # Coverage
//
// Only the ed25519 algorithm is supported. Covered components may be header
// fields (without component parameters such as ;sf, ;key, ;bs, ;req, ;tr) and
// the derived components @method, @target-uri, @authority, @scheme, @path and
// @query; anything else makes Parse fail. The signature parameters created,
// expires, nonce, alg, keyid and tag are type-checked; other parameters are
// accepted and, like all parameters, are covered by the signature. Only
// requests are handled, not responses.
//
// The Structured Field Values (RFC 8941) parsing is done here, strictly:
// malformed values, duplicate keys, oversized fields (more than 8 KiB, or
// more than 16 signatures, components or parameters) are rejected, and every
// parse error wraps [ErrMalformed].
//
// # Guarantees
//
// If Parse, Verify and (for requests with a body) VerifyContentDigest all
// succeed, the holder of the private key produced a signature over exactly
// the bytes in [Signature.Base]: the method, the target URI, the body digest
// and the signature parameters as listed there. Header values are
// canonicalised per RFC 9421 section 2.1; values with control characters
// are rejected so that no value can forge a line of the signature base.
// Freshness, required coverage and replay protection are only guaranteed
// when the caller also applies Policy.Check and a NonceCache.
package httpsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrMalformed is wrapped by every error that comes from parsing
	// signature-related fields or from a request that does not contain what
	// the signature says it covers.
	ErrMalformed = errors.New("httpsig: malformed signature headers")
	// ErrMissing is returned by Parse when the request has neither a
	// Signature nor a Signature-Input field.
	ErrMissing = errors.New("httpsig: request is not signed")
	// ErrBadSignature is wrapped when a signature does not verify.
	ErrBadSignature = errors.New("httpsig: signature does not verify")
	// ErrDigest is wrapped when Content-Digest does not match the body.
	ErrDigest = errors.New("httpsig: content-digest does not match body")
)

// Label is the label under which Sign stores its signature, and the one
// Parse looks for first.
const Label = "sig1"

const (
	// maxSigField bounds the size of the combined Signature-Input and of the
	// combined Signature field values Parse accepts.
	maxSigField = 8 << 10
	algEd25519  = "ed25519"
	maxSFInt    = 999_999_999_999_999 // the largest RFC 8941 Integer
)

// Sign signs req with key. body is the request content (nil means the
// request has no content); Sign does not read or set req.Body.
//
// Sign sets Content-Digest (sha-256) when body is not nil, then sets
// Signature-Input and Signature with label sig1, replacing any previous
// values. The covered components are "@method", "@target-uri" and, when body
// is not nil, "content-digest"; the parameters are created=now, keyid=keyID,
// alg="ed25519" and a fresh nonce of 16 random bytes in unpadded base64url.
//
// The target URI is req.URL.String(), which must be an absolute http(s) URL
// without user information or fragment. An empty path is signed as "/",
// since that is what the request line carries. req.Host, when set, must
// equal req.URL.Host: otherwise the server would see a different authority.
func Sign(req *http.Request, body []byte, keyID string, key ed25519.PrivateKey, now time.Time) error {
	if req == nil || req.URL == nil {
		return errors.New("httpsig: Sign: nil request or URL")
	}
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("httpsig: Sign: private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	qKeyID, ok := sfQuote(keyID)
	if !ok || keyID == "" {
		return fmt.Errorf("httpsig: Sign: key ID %q must be non-empty printable ASCII", keyID)
	}
	target, err := signingTarget(req)
	if err != nil {
		return err
	}
	for i := 0; i < len(req.Method); i++ {
		if !isTChar(req.Method[i]) {
			return fmt.Errorf("httpsig: Sign: method %q is not a token", req.Method)
		}
	}
	created := now.Unix()
	if created < 0 || created > maxSFInt {
		return fmt.Errorf("httpsig: Sign: time %v cannot be a created parameter", now)
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("httpsig: Sign: nonce: %w", err)
	}
	nonce := base64.RawURLEncoding.EncodeToString(rnd[:])

	components := []string{"@method", "@target-uri"}
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	if body != nil {
		req.Header.Set("Content-Digest", ContentDigest(body))
		components = append(components, "content-digest")
	}

	var p strings.Builder
	p.WriteByte('(')
	for i, c := range components {
		if i > 0 {
			p.WriteByte(' ')
		}
		p.WriteString(`"` + c + `"`)
	}
	p.WriteString(");created=" + strconv.FormatInt(created, 10))
	p.WriteString(";keyid=" + qKeyID)
	p.WriteString(`;alg="` + algEd25519 + `"`)
	p.WriteString(`;nonce="` + nonce + `"`)
	params := p.String()

	base, err := signatureBase(req, target, components, params)
	if err != nil {
		return fmt.Errorf("httpsig: Sign: %w", err)
	}
	sig := ed25519.Sign(key, base)
	req.Header.Set("Signature-Input", Label+"="+params)
	req.Header.Set("Signature", Label+"="+sfBytesString(sig))
	return nil
}

// signingTarget returns the target URI Sign covers.
func signingTarget(req *http.Request) (string, error) {
	u := *req.URL
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("httpsig: Sign: URL %q is not an absolute http(s) URL", req.URL.Redacted())
	case u.Host == "" || u.Opaque != "":
		return "", fmt.Errorf("httpsig: Sign: URL %q has no host or is opaque", req.URL.Redacted())
	case u.User != nil:
		return "", fmt.Errorf("httpsig: Sign: URL %q contains user information", req.URL.Redacted())
	case u.Fragment != "" || u.RawFragment != "":
		return "", fmt.Errorf("httpsig: Sign: URL %q contains a fragment", req.URL.Redacted())
	case req.Host != "" && req.Host != u.Host:
		return "", fmt.Errorf("httpsig: Sign: req.Host %q differs from URL host %q", req.Host, u.Host)
	}
	if u.Path == "" && u.RawPath == "" {
		u.Path = "/"
	}
	t := u.String()
	if t != u.Scheme+"://"+u.Host+u.RequestURI() {
		return "", fmt.Errorf("httpsig: Sign: URL %q does not survive the trip to the server unchanged", t)
	}
	return t, nil
}

// Signature is a parsed signature from a request.
type Signature struct {
	Label      string
	Components []string // covered component identifiers, e.g. "@method"
	KeyID      string
	Alg        string
	Created    time.Time // zero if absent
	Expires    time.Time // zero if absent
	Nonce      string
	Sig        []byte
	Base       []byte // the signature base (RFC 9421 section 2.5) computed for this request
}

// Parse finds the signature labelled sig1 (or, if Signature-Input holds
// exactly one signature, that one) in req's Signature-Input and Signature
// fields and computes its signature base from req. targetURI is the absolute
// target URI as the server reconstructs it: scheme://Host + RequestURI.
//
// Parse does not verify anything: see Signature.Verify, Policy.Check and
// VerifyContentDigest. It returns ErrMissing if both fields are absent and an
// error wrapping ErrMalformed for any other problem, including a covered
// component the request does not have.
func Parse(req *http.Request, targetURI string) (*Signature, error) {
	if req == nil {
		return nil, fmt.Errorf("%w: nil request", ErrMalformed)
	}
	inLines := req.Header.Values("Signature-Input")
	sigLines := req.Header.Values("Signature")
	switch {
	case len(inLines) == 0 && len(sigLines) == 0:
		return nil, ErrMissing
	case len(inLines) == 0:
		return nil, fmt.Errorf("%w: Signature present without Signature-Input", ErrMalformed)
	case len(sigLines) == 0:
		return nil, fmt.Errorf("%w: Signature-Input present without Signature", ErrMalformed)
	}
	inValue, err := combineField("Signature-Input", inLines)
	if err != nil {
		return nil, err
	}
	sigValue, err := combineField("Signature", sigLines)
	if err != nil {
		return nil, err
	}
	inDict, err := parseSFDictionary("Signature-Input", inValue, defaultLimits)
	if err != nil {
		return nil, err
	}
	sigDict, err := parseSFDictionary("Signature", sigValue, defaultLimits)
	if err != nil {
		return nil, err
	}

	if len(inDict) == 0 {
		return nil, fmt.Errorf("%w: Signature-Input has no signatures", ErrMalformed)
	}
	in, ok := inDict.get(Label)
	if !ok {
		if len(inDict) != 1 {
			return nil, fmt.Errorf("%w: Signature-Input has %d signatures and none labelled %q",
				ErrMalformed, len(inDict), Label)
		}
		in = &inDict[0]
	}
	label := in.key
	if !in.isList {
		return nil, fmt.Errorf("%w: Signature-Input: %q is not an inner list", ErrMalformed, label)
	}
	sm, ok := sigDict.get(label)
	if !ok {
		return nil, fmt.Errorf("%w: Signature has no member %q", ErrMalformed, label)
	}
	if sm.isList || sm.item.val.kind != sfBytes || len(sm.item.params) != 0 {
		return nil, fmt.Errorf("%w: Signature: %q must be a Byte Sequence without parameters", ErrMalformed, label)
	}

	s := &Signature{Label: label, Sig: sm.item.val.b}
	s.Components = make([]string, 0, len(in.list))
	for _, it := range in.list {
		if it.val.kind != sfString {
			return nil, fmt.Errorf("%w: Signature-Input: component identifier must be a String, not %s",
				ErrMalformed, it.val.kind.article())
		}
		name := it.val.s
		if len(it.params) != 0 {
			return nil, fmt.Errorf("%w: Signature-Input: component %q has parameters, which are not supported",
				ErrMalformed, name)
		}
		if err := checkComponentName(name); err != nil {
			return nil, err
		}
		for _, prev := range s.Components {
			if prev == name {
				return nil, fmt.Errorf("%w: Signature-Input: component %q is listed twice", ErrMalformed, name)
			}
		}
		s.Components = append(s.Components, name)
	}
	for _, p := range in.params {
		if err := s.setParam(p); err != nil {
			return nil, err
		}
	}
	s.Base, err = signatureBase(req, targetURI, s.Components, in.raw)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// combineField joins the field lines of a field per RFC 9110 section 5.3,
// refusing results larger than maxSigField.
func combineField(name string, lines []string) (string, error) {
	n := 2 * (len(lines) - 1)
	for _, l := range lines {
		n += len(l)
	}
	if n > maxSigField {
		return "", fmt.Errorf("%w: %s: value is %d bytes, more than the %d allowed", ErrMalformed, name, n, maxSigField)
	}
	return strings.Join(lines, ", "), nil
}

func (s *Signature) setParam(p sfParam) error {
	wantKind := sfString
	if p.key == "created" || p.key == "expires" {
		wantKind = sfInteger
	}
	switch p.key {
	case "created", "expires", "nonce", "alg", "keyid", "tag":
		if p.val.kind != wantKind {
			return fmt.Errorf("%w: Signature-Input: parameter %s must be %s, not %s", ErrMalformed, p.key, wantKind.article(), p.val.kind.article())
		}
	}
	switch p.key {
	case "created", "expires":
		if p.val.i < 0 {
			return fmt.Errorf("%w: Signature-Input: parameter %s is negative", ErrMalformed, p.key)
		}
		t := time.Unix(p.val.i, 0)
		if p.key == "created" {
			s.Created = t
		} else {
			s.Expires = t
		}
	case "nonce":
		s.Nonce = p.val.s
	case "alg":
		s.Alg = p.val.s
	case "keyid":
		s.KeyID = p.val.s
	}
	return nil
}

var derivedComponents = map[string]bool{
	"@method": true, "@target-uri": true, "@authority": true,
	"@scheme": true, "@path": true, "@query": true,
}

func checkComponentName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: Signature-Input: empty component identifier", ErrMalformed)
	}
	if name[0] == '@' {
		if name == "@signature-params" {
			return fmt.Errorf("%w: Signature-Input: \"@signature-params\" must not be listed as a covered component", ErrMalformed)
		}
		if !derivedComponents[name] {
			return fmt.Errorf("%w: Signature-Input: derived component %q is not supported", ErrMalformed, name)
		}
		return nil
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isTChar(c) || (c >= 'A' && c <= 'Z') {
			return fmt.Errorf("%w: Signature-Input: component %q is not a lowercase field name", ErrMalformed, name)
		}
	}
	return nil
}

// signatureBase builds the RFC 9421 section 2.5 signature base for the given
// covered components; params is the serialised @signature-params value.
// Component names must already have been checked by checkComponentName.
func signatureBase(req *http.Request, targetURI string, components []string, params string) ([]byte, error) {
	var b bytes.Buffer
	var tp *targetParts
	for _, c := range components {
		var v string
		var err error
		switch c {
		case "@method":
			v = req.Method
			if v == "" {
				v = http.MethodGet // net/http: empty means GET
			}
			for i := 0; i < len(v); i++ {
				if !isTChar(v[i]) {
					return nil, fmt.Errorf("%w: method %q is not a token", ErrMalformed, v)
				}
			}
		case "@target-uri", "@authority", "@scheme", "@path", "@query":
			if tp == nil {
				if tp, err = splitTarget(targetURI); err != nil {
					return nil, err
				}
			}
			v = tp.value(c)
		default:
			if v, err = fieldValue(req, c); err != nil {
				return nil, err
			}
		}
		b.WriteByte('"')
		b.WriteString(c)
		b.WriteString(`": `)
		b.WriteString(v)
		b.WriteByte('\n')
	}
	b.WriteString(`"@signature-params": `)
	b.WriteString(params)
	return b.Bytes(), nil
}

// fieldValue returns the RFC 9421 section 2.1 value of the named header
// field: each field line with obsolete line folding replaced by a single
// space and surrounding whitespace removed, joined with ", ".
func fieldValue(req *http.Request, name string) (string, error) {
	lines := req.Header[textproto.CanonicalMIMEHeaderKey(name)]
	if len(lines) == 0 && name == "host" && req.Host != "" {
		// net/http moves Host out of the header map.
		lines = []string{req.Host}
	}
	if len(lines) == 0 {
		return "", fmt.Errorf("%w: covered field %q is not in the request", ErrMalformed, name)
	}
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteString(", ")
		}
		v, err := canonicalFieldLine(l)
		if err != nil {
			return "", fmt.Errorf("%w: covered field %q: %v", ErrMalformed, name, err)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

// canonicalFieldLine unfolds obs-fold (OWS CRLF RWS, or a bare LF in place of
// CRLF) to a single SP, trims OWS and rejects any other control character.
func canonicalFieldLine(l string) (string, error) {
	if strings.ContainsAny(l, "\r\n") {
		var b strings.Builder
		for i := 0; i < len(l); {
			c := l[i]
			if c != '\r' && c != '\n' {
				b.WriteByte(c)
				i++
				continue
			}
			j := i
			if c == '\r' {
				j++
				if j >= len(l) || l[j] != '\n' {
					return "", errors.New("bare CR in value")
				}
			}
			j++ // past LF
			if j >= len(l) || !isOWS(l[j]) {
				return "", errors.New("line break not followed by whitespace")
			}
			for j < len(l) && isOWS(l[j]) {
				j++
			}
			// Drop the OWS before the fold too; one SP replaces all of it.
			s := strings.TrimRight(b.String(), " \t")
			b.Reset()
			b.WriteString(s)
			b.WriteByte(' ')
			i = j
		}
		l = b.String()
	}
	l = strings.Trim(l, " \t")
	for i := 0; i < len(l); i++ {
		if c := l[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return "", fmt.Errorf("control character %q in value", c)
		}
	}
	return l, nil
}

// targetParts holds the pieces of an absolute target URI, as text.
type targetParts struct {
	uri, scheme, authority, path, query string
}

// splitTarget splits an absolute URI textually, without decoding anything.
func splitTarget(t string) (*targetParts, error) {
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= 0x20 || c >= 0x7f {
			return nil, fmt.Errorf("%w: target URI %q contains %q", ErrMalformed, t, c)
		}
	}
	i := strings.Index(t, "://")
	if i <= 0 {
		return nil, fmt.Errorf("%w: target URI %q is not absolute", ErrMalformed, t)
	}
	tp := &targetParts{uri: t, scheme: strings.ToLower(t[:i])}
	for k := 0; k < len(tp.scheme); k++ {
		c := tp.scheme[k]
		if !(isLCAlpha(c) || k > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.')) {
			return nil, fmt.Errorf("%w: target URI %q has an invalid scheme", ErrMalformed, t)
		}
	}
	rest := t[i+3:]
	if j := strings.IndexByte(rest, '#'); j >= 0 {
		rest = rest[:j]
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	rest = rest[end:]
	if auth == "" || strings.IndexByte(auth, '@') >= 0 {
		return nil, fmt.Errorf("%w: target URI %q has no host or has user information", ErrMalformed, t)
	}
	auth = strings.ToLower(auth)
	if tp.scheme == "http" {
		auth = strings.TrimSuffix(auth, ":80")
	} else if tp.scheme == "https" {
		auth = strings.TrimSuffix(auth, ":443")
	}
	tp.authority = strings.TrimSuffix(auth, ":")
	tp.path = rest
	if j := strings.IndexByte(rest, '?'); j >= 0 {
		tp.path, tp.query = rest[:j], rest[j+1:]
	}
	if tp.path == "" {
		tp.path = "/"
	}
	return tp, nil
}

// value returns the value of a URI-derived component (RFC 9421 section 2.2).
func (tp *targetParts) value(component string) string {
	switch component {
	case "@target-uri":
		return tp.uri
	case "@authority":
		return tp.authority
	case "@scheme":
		return tp.scheme
	case "@path":
		return tp.path
	case "@query":
		return "?" + tp.query
	}
	panic("httpsig: not a URI component: " + component)
}

// Verify checks the Ed25519 signature s.Sig over s.Base with pub. It refuses
// a signature whose alg parameter names another algorithm. A public key of
// the wrong size is reported as a plain error (a configuration problem, not
// a bad signature).
func (s *Signature) Verify(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("httpsig: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	switch {
	case s == nil || len(s.Base) == 0:
		return fmt.Errorf("%w: no signature base", ErrBadSignature)
	case s.Alg != "" && s.Alg != algEd25519:
		return fmt.Errorf("%w: alg %q is not %s", ErrBadSignature, s.Alg, algEd25519)
	case len(s.Sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadSignature, len(s.Sig), ed25519.SignatureSize)
	case !ed25519.Verify(pub, s.Base, s.Sig):
		return ErrBadSignature
	}
	return nil
}

// Covers reports whether the signature covers the component identifier
// (compared exactly, e.g. "@method" or "content-digest").
func (s *Signature) Covers(component string) bool {
	if s == nil {
		return false
	}
	for _, c := range s.Components {
		if c == component {
			return true
		}
	}
	return false
}
