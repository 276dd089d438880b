package httpsig

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"
)

// maxDigestHeader bounds the Content-Digest value VerifyContentDigest parses.
const maxDigestHeader = 8 << 10

// ContentDigest returns the RFC 9530 Content-Digest field value for body,
// using sha-256: `sha-256=:<base64 of SHA-256(body)>:`.
func ContentDigest(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha-256=" + sfBytesString(sum[:])
}

// VerifyContentDigest checks an RFC 9530 Content-Digest field value against
// body. The value is parsed strictly as an RFC 8941 Dictionary (pass all field
// lines joined with ", " if the field was sent more than once). Members for
// algorithms other than sha-256 and sha-512 are ignored (whatever their type),
// but at least one of sha-256 and sha-512 must be present, and every one
// present must be a Byte Sequence equal to the digest of body.
//
// Parse errors wrap ErrMalformed; a missing or mismatching digest wraps
// ErrDigest.
func VerifyContentDigest(header string, body []byte) error {
	if len(header) > maxDigestHeader {
		return fmt.Errorf("%w: Content-Digest: value is %d bytes, more than the %d allowed",
			ErrMalformed, len(header), maxDigestHeader)
	}
	d, err := parseSFDictionary("Content-Digest", header, defaultLimits)
	if err != nil {
		return err
	}
	known := 0
	for _, m := range d {
		var want []byte
		switch m.key {
		case "sha-256":
			s := sha256.Sum256(body)
			want = s[:]
		case "sha-512":
			s := sha512.Sum512(body)
			want = s[:]
		default:
			continue // RFC 9530 section 2: unknown algorithms are ignored
		}
		if m.isList || m.item.val.kind != sfBytes {
			return fmt.Errorf("%w: Content-Digest: %s value must be a Byte Sequence", ErrMalformed, m.key)
		}
		if subtle.ConstantTimeCompare(m.item.val.b, want) != 1 {
			return fmt.Errorf("%w: %s digest differs", ErrDigest, m.key)
		}
		known++
	}
	if known == 0 {
		return fmt.Errorf("%w: no sha-256 or sha-512 digest present", ErrDigest)
	}
	return nil
}
