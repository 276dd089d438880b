package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/vellum-audit/vellum/api"
	"github.com/vellum-audit/vellum/internal/entry"
	"github.com/vellum-audit/vellum/internal/httpsig"
	"github.com/vellum-audit/vellum/internal/keys"
)

// call is an authenticated request.
type call struct {
	key  *keys.Key
	auth string // entry.AuthSignature
	body []byte
	log  string // the {log} path value, if any
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c *call) error

// handle registers fn behind authentication and, when op is set and the
// route has a {log}, authorisation of op on that log.
func (s *Server) handle(pattern, op string, fn handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(w, r)
		if err != nil {
			writeError(w, r, s.cfg.Logger, err)
			return
		}
		if name := r.PathValue("log"); name != "" {
			if !api.ValidLogName(name) && !api.Reserved(name) {
				writeError(w, r, s.cfg.Logger, errBadRequest("invalid log name %q: use 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit", name))
				return
			}
			c.log = name
			if op != "" && !c.key.Allows(op, name) {
				writeError(w, r, s.cfg.Logger, newHTTPError(http.StatusForbidden, api.CodeForbidden, "this key may not %s log %q", op, name))
				return
			}
		}
		if err := fn(w, r, c); err != nil {
			writeError(w, r, s.cfg.Logger, err)
		}
	})
}

// targetURI reconstructs the absolute URI the client signed.
func targetURI(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + r.URL.RequestURI()
}

// authenticate reads the (bounded) body and checks the request's RFC 9421
// signature. Every failure is the same 401 to the client; the reason is
// logged.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*call, error) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodySize))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body over %d bytes", api.MaxBodySize)
			}
			return nil, errBadRequest("reading request body: %v", err)
		}
	}
	refuse := func(reason error) (*call, error) {
		s.cfg.Logger.Info("authentication refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", reason.Error())
		return nil, errUnauthorized
	}
	sig, err := httpsig.Parse(r, targetURI(r))
	if err != nil {
		if errors.Is(err, httpsig.ErrMissing) {
			s.cfg.Logger.Info("authentication refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "unsigned")
			return nil, newHTTPError(http.StatusUnauthorized, api.CodeUnauthorized, "the request is not signed: sign it with a provisioning key (RFC 9421; the vellum CLI and Go SDK do this)")
		}
		return refuse(err)
	}
	now := s.cfg.Now()
	if err := s.policy.Check(sig, len(body) > 0, now); err != nil {
		return refuse(err)
	}
	key, err := s.cfg.Registry.Get(sig.KeyID)
	if err != nil {
		return refuse(fmt.Errorf("key %q: %w", sig.KeyID, err))
	}
	if err := key.ActiveAt(now); err != nil {
		return refuse(fmt.Errorf("key %q: %w", sig.KeyID, err))
	}
	if err := sig.Verify(key.PublicKey); err != nil {
		return refuse(fmt.Errorf("key %q: %w", sig.KeyID, err))
	}
	if digest := strings.Join(r.Header.Values("Content-Digest"), ", "); len(body) > 0 || digest != "" {
		if err := httpsig.VerifyContentDigest(digest, body); err != nil {
			return refuse(fmt.Errorf("key %q: %w", sig.KeyID, err))
		}
	}
	// The nonce is recorded last, so that a forged request cannot burn a
	// legitimate client's nonce.
	if err := s.nonces.Check(sig.KeyID, sig.Nonce, sig.Created, now); err != nil {
		return refuse(fmt.Errorf("key %q: %w", sig.KeyID, err))
	}
	return &call{key: key, auth: entry.AuthSignature, body: body}, nil
}
