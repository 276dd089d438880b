package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// Config is the alerting configuration, read from a TOML file (see
// docs/alerts.md for every key). LoadConfig fills in defaults, checks
// every value and resolves the webhook secrets, so a *Config from it is
// ready to use.
type Config struct {
	// Node names this vellum node in the alerts it raises (optional).
	Node string `toml:"node" json:"node"`
	// DedupeWindow: repeats of one alert ID within it only raise the
	// first alert's count (default 10m; 0 delivers every repeat).
	DedupeWindow Duration        `toml:"dedupe_window" json:"dedupe_window"`
	Webhooks     []WebhookConfig `toml:"webhook" json:"webhook"`
	Syslogs      []SyslogConfig  `toml:"syslog" json:"syslog"`
	Silence      SilenceConfig   `toml:"silence" json:"silence"`
	Thresholds   Thresholds      `toml:"thresholds" json:"thresholds"`
	AutoRevoke   AutoRevoke      `toml:"auto_revoke" json:"auto_revoke"`
}

// Filter is the per-sink choice of alerts.
type Filter struct {
	// Detectors, if not empty, lists the only detectors this sink gets.
	Detectors []string `toml:"detectors" json:"detectors"`
	// MinSeverity: info (default: everything), warning or critical.
	MinSeverity string `toml:"min_severity" json:"min_severity"`
}

// WebhookConfig is one [[webhook]].
type WebhookConfig struct {
	Name string `toml:"name" json:"name"`
	URL  string `toml:"url" json:"url"`
	// The HMAC secret comes from a file (relative paths are relative to
	// the config file; surrounding whitespace is trimmed) or from an
	// environment variable: exactly one of the two. Inline secrets are
	// refused, so that the file can be shared, versioned and recorded.
	SecretFile string `toml:"secret_file" json:"secret_file,omitempty"`
	SecretEnv  string `toml:"secret_env" json:"secret_env,omitempty"`
	// Secret exists only to refuse an inline secret with a clear message.
	Secret      string   `toml:"secret" json:"-"`
	Timeout     Duration `toml:"timeout" json:"timeout"`
	MaxAttempts int      `toml:"max_attempts" json:"max_attempts"`
	CAFile      string   `toml:"ca_file" json:"ca_file,omitempty"`
	Filter

	secret []byte // resolved; never in any output
}

// SyslogConfig is one [[syslog]].
type SyslogConfig struct {
	Name        string   `toml:"name" json:"name"`
	Network     string   `toml:"network" json:"network"`
	Address     string   `toml:"address" json:"address"`
	Facility    string   `toml:"facility" json:"facility"`
	AppName     string   `toml:"app_name" json:"app_name"`
	Hostname    string   `toml:"hostname" json:"hostname,omitempty"`
	Framing     string   `toml:"framing" json:"framing,omitempty"`
	Timeout     Duration `toml:"timeout" json:"timeout"`
	MaxAttempts int      `toml:"max_attempts" json:"max_attempts"`
	Filter
}

// SilenceConfig configures the silence detector.
type SilenceConfig struct {
	// Default is the silence window for every (log, key, source) that
	// has written before; 0 (the default) turns silence alerts off
	// except where a rule asks for them.
	Default Duration      `toml:"default" json:"default"`
	Expect  []SilenceRule `toml:"expect" json:"expect"`
}

// SilenceRule expects a log (optionally: one key, one source) to be
// written at least once every Every.
type SilenceRule struct {
	Log    string   `toml:"log" json:"log"`
	Key    string   `toml:"key" json:"key,omitempty"`
	Source string   `toml:"source" json:"source,omitempty"`
	Every  Duration `toml:"every" json:"every"`
}

// Thresholds tunes the detectors.
type Thresholds struct {
	BurstFactor         float64  `toml:"burst_factor" json:"burst_factor"`
	BurstMinEvents      int      `toml:"burst_min_events" json:"burst_min_events"`
	AuthFailures        int      `toml:"auth_failures" json:"auth_failures"`
	AuthFailuresWindow  Duration `toml:"auth_failures_window" json:"auth_failures_window"`
	TwoNetworksWindow   Duration `toml:"two_networks_window" json:"two_networks_window"`
	TwoNetworksPrefixV4 int      `toml:"two_networks_prefix_v4" json:"two_networks_prefix_v4"`
	TwoNetworksPrefixV6 int      `toml:"two_networks_prefix_v6" json:"two_networks_prefix_v6"`
	KeyExpiring         Duration `toml:"key_expiring" json:"key_expiring"`
	KeyUnused           Duration `toml:"key_unused" json:"key_unused"`
	HygieneInterval     Duration `toml:"hygiene_interval" json:"hygiene_interval"`
}

// AutoRevoke lists the detectors whose alerts revoke the alert's key at
// once (default: none).
type AutoRevoke struct {
	Detectors []string `toml:"detectors" json:"detectors"`
}

// Duration is a time.Duration written as a Go duration string ("90s",
// "10m", "1h30m") or with a leading whole number of days ("7d", "1d12h").
// "0" is zero.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d in the form ParseDuration reads (days are shown as hours).
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a duration as described at Duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var daysPrefix = regexp.MustCompile(`^([0-9]+)d`)

// ParseDuration parses a Go duration with an optional leading "<n>d".
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	var days time.Duration
	if m := daysPrefix.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > int64(math.MaxInt64/int64(24*time.Hour)) {
			return 0, fmt.Errorf("duration %q: too large", orig)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[len(m[0]):]
		if s == "" {
			return days, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want e.g. \"90s\", \"10m\", \"1h30m\" or \"7d\"", orig)
	}
	if days > 0 && (v < 0 || v > math.MaxInt64-days) {
		return 0, fmt.Errorf("duration %q: out of range", orig)
	}
	return days + v, nil
}

// DefaultConfig returns the configuration an empty file gives: no sinks,
// no silence rules, no auto-revocation, default thresholds.
func DefaultConfig() *Config {
	return &Config{
		DedupeWindow: Duration(10 * time.Minute),
		Webhooks:     []WebhookConfig{},
		Syslogs:      []SyslogConfig{},
		Silence:      SilenceConfig{Expect: []SilenceRule{}},
		Thresholds: Thresholds{
			BurstFactor:         10,
			BurstMinEvents:      200,
			AuthFailures:        5,
			AuthFailuresWindow:  Duration(time.Minute),
			TwoNetworksWindow:   Duration(5 * time.Minute),
			TwoNetworksPrefixV4: 24,
			TwoNetworksPrefixV6: 48,
			KeyExpiring:         Duration(7 * 24 * time.Hour),
			KeyUnused:           Duration(30 * 24 * time.Hour),
			HygieneInterval:     Duration(time.Hour),
		},
		AutoRevoke: AutoRevoke{Detectors: []string{}},
	}
}

// maxConfigSize bounds the config file.
const maxConfigSize = 1 << 20

// LoadConfig reads, checks and resolves the config file at path.
func LoadConfig(path string) (*Config, error) {
	b, err := readSmallFile(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("alerts config: %v", err)
	}
	c, err := ParseConfig(b, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("alerts config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses a config file's contents; relative secret_file and
// ca_file paths are taken relative to dir. The error lists every problem
// found, one per line.
func ParseConfig(data []byte, dir string) (*Config, error) {
	c := DefaultConfig()
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return nil, fmt.Errorf("line %d, key %q: %s", pe.Position.Line, pe.LastKey, pe.Message)
			}
			return nil, fmt.Errorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return nil, err
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, fmt.Errorf("unknown key %q", k.String()))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := c.check(dir); err != nil {
		return nil, err
	}
	return c, nil
}

var logName = regexp.MustCompile(`^(_system|_access|[a-z0-9][a-z0-9._-]{0,62})$`)

// printable reports whether s is valid UTF-8 without control characters
// and at most max bytes long.
func printable(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func checkDetectors(where string, ds []string, errs *[]error) []string {
	for _, d := range ds {
		if !Known(d) {
			*errs = append(*errs, fmt.Errorf("%s: unknown detector %q (known: %s)", where, d, strings.Join(Detectors, ", ")))
		}
	}
	if ds == nil {
		return []string{}
	}
	return ds
}

func checkFilter(where string, f *Filter, errs *[]error) {
	f.Detectors = checkDetectors(where+".detectors", f.Detectors, errs)
	if f.MinSeverity == "" {
		f.MinSeverity = Info
	}
	if SeverityRank(f.MinSeverity) == 0 {
		*errs = append(*errs, fmt.Errorf("%s.min_severity %q: want info, warning or critical", where, f.MinSeverity))
	}
}

func checkAttempts(where string, t *Duration, n *int, errs *[]error) {
	if *t == 0 {
		*t = Duration(5 * time.Second)
	}
	if *t < 0 || *t > Duration(5*time.Minute) {
		*errs = append(*errs, fmt.Errorf("%s.timeout %v: want more than 0 and at most 5m", where, *t))
	}
	if *n == 0 {
		*n = 8
	}
	if *n < 1 || *n > 100 {
		*errs = append(*errs, fmt.Errorf("%s.max_attempts %d: want 1 to 100", where, *n))
	}
}

// check fills per-entry defaults, validates everything and resolves
// secrets.
func (c *Config) check(dir string) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !printable(c.Node, 64) {
		bad("node %q: want at most 64 printable characters", c.Node)
	}
	if c.DedupeWindow < 0 {
		bad("dedupe_window %v: must not be negative", c.DedupeWindow)
	}
	if c.Webhooks == nil {
		c.Webhooks = []WebhookConfig{}
	}
	if c.Syslogs == nil {
		c.Syslogs = []SyslogConfig{}
	}
	names := map[string]bool{}
	uniqueName := func(where, explicit, def string) string {
		if explicit != "" {
			if !headerField(explicit, 64) {
				bad("%s.name %q: want 1 to 64 printable ASCII characters, no spaces", where, explicit)
			}
			if names[explicit] {
				bad("%s.name %q: another sink has that name", where, explicit)
			}
			names[explicit] = true
			return explicit
		}
		n := def
		for i := 2; names[n]; i++ {
			n = def + "#" + strconv.Itoa(i)
		}
		names[n] = true
		return n
	}
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		where := fmt.Sprintf("webhook[%d]", i)
		checkFilter(where, &w.Filter, &errs)
		checkAttempts(where, &w.Timeout, &w.MaxAttempts, &errs)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			bad("%s.url: required", where)
			continue
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("%s.url %q: want an http:// or https:// URL with a host", where, redactURL(w.URL))
			continue
		}
		w.Name = uniqueName(where, w.Name, "webhook:"+u.Host)
		if w.CAFile != "" && !filepath.IsAbs(w.CAFile) {
			w.CAFile = filepath.Join(dir, w.CAFile)
		}
		if w.CAFile != "" && u.Scheme != "https" {
			bad("%s.ca_file: applies only to https URLs", where)
			continue
		}
		if w.Secret != "" {
			bad("%s.secret: inline secrets are refused (the config is recorded and shared); use secret_file or secret_env", where)
			continue
		}
		switch {
		case w.SecretFile != "" && w.SecretEnv != "":
			bad("%s: set secret_file or secret_env, not both", where)
			continue
		case w.SecretFile != "":
			p := w.SecretFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			b, err := readSmallFile(p, 64<<10)
			if err != nil {
				bad("%s.secret_file: %v", where, err)
				continue
			}
			w.secret = []byte(strings.TrimSpace(string(b)))
		case w.SecretEnv != "":
			v, ok := os.LookupEnv(w.SecretEnv)
			if !ok {
				bad("%s.secret_env: environment variable %s is not set", where, w.SecretEnv)
				continue
			}
			w.secret = []byte(strings.TrimSpace(v))
		default:
			bad("%s: a secret is required: set secret_file or secret_env", where)
			continue
		}
		if len(w.secret) < 16 {
			bad("%s: the secret is %d bytes; use at least 16 (e.g. openssl rand -hex 32)", where, len(w.secret))
			continue
		}
		if _, err := w.build(""); err != nil {
			bad("%s: %v", where, err)
		}
	}
	for i := range c.Syslogs {
		s := &c.Syslogs[i]
		where := fmt.Sprintf("syslog[%d]", i)
		checkFilter(where, &s.Filter, &errs)
		checkAttempts(where, &s.Timeout, &s.MaxAttempts, &errs)
		if s.Facility == "" {
			s.Facility = DefaultFacility
		}
		if s.AppName == "" {
			s.AppName = "vellum"
		}
		switch s.Network {
		case "udp", "tcp":
			host, port, err := net.SplitHostPort(s.Address)
			if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
				bad("%s.address %q: want host:port", where, s.Address)
			}
		case "unix", "unixgram":
			if s.Address == "" || strings.ContainsRune(s.Address, 0) {
				bad("%s.address %q: want a socket path", where, s.Address)
			}
		default:
			bad("%s.network %q: want udp, tcp, unix or unixgram", where, s.Network)
			continue
		}
		if s.Framing != "" && (s.Network == "udp" || s.Network == "unixgram") {
			bad("%s.framing: applies only to tcp and unix", where)
		} else if s.Framing == "" && (s.Network == "tcp" || s.Network == "unix") {
			s.Framing = "octet-counting"
		}
		s.Name = uniqueName(where, s.Name, "syslog:"+s.Network+":"+s.Address)
		if _, err := s.build(); err != nil {
			bad("%s: %v", where, err)
		}
	}
	if c.Silence.Default < 0 {
		bad("silence.default %v: must not be negative", c.Silence.Default)
	}
	if c.Silence.Expect == nil {
		c.Silence.Expect = []SilenceRule{}
	}
	seen := map[[3]string]bool{}
	for i, r := range c.Silence.Expect {
		where := fmt.Sprintf("silence.expect[%d]", i)
		if r.Log == "" {
			bad("%s.log: required", where)
		} else if !logName.MatchString(r.Log) {
			bad("%s.log %q: not a log name", where, r.Log)
		}
		if r.Key != "" && !headerField(r.Key, 128) {
			bad("%s.key %q: not a key id", where, r.Key)
		}
		if !printable(r.Source, 256) {
			bad("%s.source %q: want at most 256 printable characters", where, r.Source)
		}
		if r.Every <= 0 {
			bad("%s.every: required, more than 0", where)
		}
		k := [3]string{r.Log, r.Key, r.Source}
		if seen[k] {
			bad("%s: another rule has the same log, key and source", where)
		}
		seen[k] = true
	}
	t := &c.Thresholds
	if math.IsNaN(t.BurstFactor) || math.IsInf(t.BurstFactor, 0) || t.BurstFactor <= 1 {
		bad("thresholds.burst_factor %v: want a number above 1", t.BurstFactor)
	}
	if t.BurstMinEvents < 0 {
		bad("thresholds.burst_min_events %d: must not be negative", t.BurstMinEvents)
	}
	if t.AuthFailures < 1 {
		bad("thresholds.auth_failures %d: want at least 1", t.AuthFailures)
	}
	for name, d := range map[string]Duration{
		"auth_failures_window": t.AuthFailuresWindow,
		"two_networks_window":  t.TwoNetworksWindow,
		"hygiene_interval":     t.HygieneInterval,
	} {
		if d <= 0 {
			bad("thresholds.%s %v: want more than 0", name, d)
		}
	}
	if t.KeyExpiring < 0 {
		bad("thresholds.key_expiring %v: must not be negative (0 turns it off)", t.KeyExpiring)
	}
	if t.KeyUnused < 0 {
		bad("thresholds.key_unused %v: must not be negative (0 turns it off)", t.KeyUnused)
	}
	if t.TwoNetworksPrefixV4 < 0 || t.TwoNetworksPrefixV4 > 32 {
		bad("thresholds.two_networks_prefix_v4 %d: want 0 to 32", t.TwoNetworksPrefixV4)
	}
	if t.TwoNetworksPrefixV6 < 0 || t.TwoNetworksPrefixV6 > 128 {
		bad("thresholds.two_networks_prefix_v6 %d: want 0 to 128", t.TwoNetworksPrefixV6)
	}
	c.AutoRevoke.Detectors = checkDetectors("auto_revoke.detectors", c.AutoRevoke.Detectors, &errs)
	return errors.Join(errs...)
}

func (w *WebhookConfig) build(version string) (*Webhook, error) {
	return NewWebhook(WebhookOptions{Name: w.Name, URL: w.URL, Secret: w.secret,
		Timeout: w.Timeout.D(), Version: version, CAFile: w.CAFile})
}

func (s *SyslogConfig) build() (*Syslog, error) {
	return NewSyslog(SyslogOptions{Name: s.Name, Network: s.Network, Address: s.Address,
		Facility: s.Facility, AppName: s.AppName, Hostname: s.Hostname,
		Framing: s.Framing, Timeout: s.Timeout.D()})
}

// Sinks builds the configured sinks, each wrapped in a Route with its
// filter and attempt limit, for NewDispatcher. version goes in the
// webhooks' User-Agent.
func (c *Config) Sinks(version string) ([]Sink, error) {
	var out []Sink
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		s, err := w.build(version)
		if err != nil {
			return nil, fmt.Errorf("webhook[%d]: %v", i, err)
		}
		out = append(out, &Route{Sink: s, Detectors: w.Detectors, MinSeverity: w.MinSeverity, Attempts: w.MaxAttempts})
	}
	for i := range c.Syslogs {
		sc := &c.Syslogs[i]
		s, err := sc.build()
		if err != nil {
			return nil, fmt.Errorf("syslog[%d]: %v", i, err)
		}
		out = append(out, &Route{Sink: s, Detectors: sc.Detectors, MinSeverity: sc.MinSeverity, Attempts: sc.MaxAttempts})
	}
	return out, nil
}

// Canonical returns the effective configuration (defaults filled in) as
// compact JSON with a fixed key order: equal configurations give equal
// bytes. Secrets are never included, only where they come from
// (secret_file, secret_env); webhook URLs are included whole.
func (c *Config) Canonical() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic("alert: config does not encode: " + err.Error()) // plain types only
	}
	return b
}

// Digest is the hex SHA-256 of Canonical. Rotating a secret's value
// (not its source) does not change it.
func (c *Config) Digest() string {
	h := sha256.Sum256(c.Canonical())
	return hex.EncodeToString(h[:])
}

// Redacted is Canonical with the webhook URLs' passwords and query values
// replaced by "REDACTED": what may be recorded in _system or logged.
// (A token in a URL's path cannot be told apart from the path: keep tokens
// out of paths, or in secret-bearing query parameters.)
func (c *Config) Redacted() []byte {
	cp := *c
	cp.Webhooks = make([]WebhookConfig, len(c.Webhooks))
	for i, w := range c.Webhooks {
		w.URL = redactURL(w.URL)
		w.secret = nil
		cp.Webhooks[i] = w
	}
	return cp.Canonical()
}
