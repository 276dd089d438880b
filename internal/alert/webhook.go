package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Webhook signatures
//
// A webhook delivery is an HTTP POST whose body is the Alert as JSON. It
// carries these headers:
//
//	Content-Type: application/json
//	User-Agent: vellum/<version>
//	Vellum-Alert-Id: <alert id>
//	Vellum-Alert-Detector: <detector>
//	Vellum-Signature: t=<unix seconds>,v1=<hex signature>
//
// where the signature is HMAC-SHA256, keyed with the webhook's shared
// secret, over the decimal timestamp, a full stop, and the exact body
// bytes:
//
//	v1 = hex(HMAC-SHA256(secret, t + "." + body))
//
// A receiver recomputes the HMAC over the raw body (before any JSON
// parsing), compares in constant time, and refuses timestamps too far
// from its own clock, which bounds replays; the alert's id lets it drop
// repeats within that window. Every retry is signed afresh. A header may
// carry several v1= values (for secret rotation); one match suffices.
// [VerifyWebhook] does all of this.

// SignatureHeader is the header that carries the webhook signature.
const SignatureHeader = "Vellum-Signature"

// DefaultTolerance is the clock skew VerifyWebhook accepts when given 0.
const DefaultTolerance = 5 * time.Minute

// Errors from VerifyWebhook.
var (
	ErrNoSignature  = errors.New("webhook: malformed or missing signature header")
	ErrStale        = errors.New("webhook: signature timestamp outside tolerance")
	ErrBadSignature = errors.New("webhook: signature mismatch")
)

// SignWebhook returns the Vellum-Signature header value for body at t.
func SignWebhook(secret []byte, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(webhookMAC(secret, ts, body))
}

func webhookMAC(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifyWebhook checks a Vellum-Signature header value against the raw
// body: it returns nil if one v1 signature is the HMAC-SHA256 of
// "<t>.<body>" under secret (compared in constant time) and t is within
// tolerance of now (DefaultTolerance if tolerance ≤ 0), in either
// direction.
func VerifyWebhook(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrNoSignature
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrNoSignature
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return ErrNoSignature
			}
			sigs = append(sigs, b)
		}
		// Other schemes (v2=...) are ignored, for forward compatibility.
	}
	if ts == "" || len(sigs) == 0 {
		return ErrNoSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec < 0 || strconv.FormatInt(sec, 10) != ts {
		return ErrNoSignature
	}
	// Compare in seconds to avoid overflowing time.Duration.
	skew := now.Unix() - sec
	if skew < 0 {
		skew = -skew
	}
	if skew > int64(tolerance/time.Second) {
		return ErrStale
	}
	want := webhookMAC(secret, ts, body)
	ok := 0
	for _, s := range sigs {
		ok |= subtle.ConstantTimeCompare(s, want)
	}
	if ok == 0 {
		return ErrBadSignature
	}
	return nil
}

// WebhookOptions configures a webhook sink.
type WebhookOptions struct {
	// Name identifies the sink in metrics and logs (default "webhook:<host>").
	Name string
	// URL is the http or https endpoint.
	URL string
	// Secret keys the HMAC signature; required.
	Secret []byte
	// Timeout bounds each attempt (default 5s).
	Timeout time.Duration
	// Version goes in the User-Agent: "vellum/<version>".
	Version string
	// CAFile, if set, is a PEM file of the CAs trusted for an https URL
	// instead of the system's.
	CAFile string
	// Client, if set, is used instead of one built from the options
	// above (CAFile is then ignored). It should not follow redirects.
	Client *http.Client
}

// Webhook is the webhook sink.
type Webhook struct {
	name    string
	url     string
	secret  []byte
	timeout time.Duration
	ua      string
	client  *http.Client
	now     func() time.Time
}

// NewWebhook checks opts and returns the sink.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("webhook url: %v", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook url %q: want http:// or https:// and a host", redactURL(opts.URL))
	}
	if len(opts.Secret) == 0 {
		return nil, errors.New("webhook: a secret is required to sign deliveries")
	}
	w := &Webhook{name: opts.Name, url: opts.URL, secret: bytes.Clone(opts.Secret),
		timeout: opts.Timeout, client: opts.Client, now: time.Now}
	if w.name == "" {
		w.name = "webhook:" + u.Host
	}
	if w.timeout <= 0 {
		w.timeout = 5 * time.Second
	}
	v := opts.Version
	if v == "" {
		v = "dev"
	}
	w.ua = "vellum/" + v
	if w.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if opts.CAFile != "" {
			if u.Scheme != "https" {
				return nil, errors.New("webhook: ca_file applies only to https URLs")
			}
			pool, err := loadCAFile(opts.CAFile)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		w.client = &http.Client{
			Transport: tr,
			// A redirected POST turns into a GET elsewhere: refuse.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return w, nil
}

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := readSmallFile(path, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("ca_file: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s: no PEM certificates in it", path)
	}
	return pool, nil
}

// readSmallFile reads a regular file of at most limit bytes.
func readSmallFile(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

// Name is the sink's name.
func (w *Webhook) Name() string { return w.name }

// Deliver POSTs a once. 2xx is success; 429, 5xx and network errors are
// retryable (with the receiver's Retry-After, if any); anything else is
// Permanent.
func (w *Webhook) Deliver(ctx context.Context, a Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return Permanent(fmt.Errorf("webhook: encoding alert: %v", err))
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("webhook: %v", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.ua)
	req.Header.Set("Vellum-Alert-Id", a.ID)
	req.Header.Set("Vellum-Alert-Detector", a.Detector)
	req.Header.Set(SignatureHeader, SignWebhook(w.secret, body, w.now()))
	resp, err := w.client.Do(req)
	if err != nil {
		// The URL may hold a token: say only where, not the whole of it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook %s: %v", w.name, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = fmt.Errorf("webhook %s: HTTP %d: %s", w.name, code, strings.TrimSpace(string(snippet)))
	if code == http.StatusTooManyRequests || code >= 500 {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), w.now()); ok {
			return RetryAfter(err, d)
		}
		return err
	}
	return Permanent(err)
}

// parseRetryAfter reads delay-seconds or an HTTP-date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > 86400 {
			n = 86400
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// redactURL hides a URL's password and query values, which often carry
// tokens.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment = ""
	return u.String()
}
