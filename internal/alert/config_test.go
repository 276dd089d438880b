package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const exampleSecret = "example-secret-0123456789abcdef"

func TestExampleConfigParses(t *testing.T) {
	t.Setenv("VELLUM_WEBHOOK_SECRET", exampleSecret)
	c, err := LoadConfig(filepath.Join("..", "..", "docs", "alerts.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "vellum-1" || c.DedupeWindow.D() != 10*time.Minute {
		t.Errorf("top level: %+v", c)
	}
	if len(c.Webhooks) != 1 || c.Webhooks[0].Name != "webhook:alerts.example" || c.Webhooks[0].MinSeverity != Warning ||
		string(c.Webhooks[0].secret) != exampleSecret || c.Webhooks[0].MaxAttempts != 8 {
		t.Errorf("webhooks: %+v", c.Webhooks)
	}
	if len(c.Syslogs) != 2 || c.Syslogs[1].Name != "local-journal" || c.Syslogs[1].Facility != "authpriv" || c.Syslogs[1].AppName != "vellum" {
		t.Errorf("syslogs: %+v", c.Syslogs)
	}
	if len(c.Silence.Expect) != 2 || c.Silence.Expect[1].Every.D() != 24*time.Hour || c.Silence.Expect[1].Source != "idp-sync" {
		t.Errorf("silence: %+v", c.Silence)
	}
	if c.Thresholds.KeyExpiring.D() != 168*time.Hour || c.Thresholds != DefaultConfig().Thresholds {
		t.Errorf("thresholds: %+v, want the defaults", c.Thresholds)
	}
	if strings.Join(c.AutoRevoke.Detectors, ",") != "replay,cidr" {
		t.Errorf("auto_revoke: %v", c.AutoRevoke)
	}
	sinks, err := c.Sinks("9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sinks {
		names = append(names, s.Name())
	}
	if strings.Join(names, " ") != "webhook:alerts.example syslog:udp:127.0.0.1:514 local-journal" {
		t.Errorf("sinks %v", names)
	}
	// Secrets never appear; everything else does.
	for _, out := range [][]byte{c.Canonical(), c.Redacted()} {
		if bytes.Contains(out, []byte(exampleSecret)) {
			t.Errorf("secret in %s", out)
		}
		if !json.Valid(out) || !bytes.Contains(out, []byte("VELLUM_WEBHOOK_SECRET")) {
			t.Errorf("bad output %s", out)
		}
	}
	if len(c.Digest()) != 64 {
		t.Errorf("digest %q", c.Digest())
	}
}

func parse(t *testing.T, text string) (*Config, error) {
	t.Helper()
	return ParseConfig([]byte(text), t.TempDir())
}

func TestEmptyConfigIsDefault(t *testing.T) {
	c, err := parse(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Canonical(), DefaultConfig().Canonical()) {
		t.Errorf("empty file:\n%s\ndefault:\n%s", c.Canonical(), DefaultConfig().Canonical())
	}
	// Writing the defaults out gives the same digest.
	c2, err := parse(t, "dedupe_window = \"600s\"\n[thresholds]\nkey_unused = \"720h\"\nburst_factor = 10.0\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest() != c2.Digest() {
		t.Errorf("digests differ: %s vs %s", c.Canonical(), c2.Canonical())
	}
	c3, _ := parse(t, "node = \"x\"")
	if c3.Digest() == c.Digest() {
		t.Error("digest ignores node")
	}
}

func TestConfigErrors(t *testing.T) {
	t.Setenv("ALERT_TEST_SECRET", exampleSecret)
	t.Setenv("ALERT_SHORT_SECRET", "short")
	const hook = "[[webhook]]\nurl = \"https://h.example/\"\nsecret_env = \"ALERT_TEST_SECRET\"\n"
	for text, want := range map[string]string{
		"nodee = \"x\"":           `unknown key "nodee"`,
		hook + "secrett = 1":      `unknown key "webhook.secrett"`,
		"[thresholds]\nburst = 3": `unknown key "thresholds.burst"`,
		"[silence]\n[[silence.expect]]\nlog=\"a\"\nevery=\"1m\"\nkeyid=\"k\"":                         `unknown key "silence.expect.keyid"`,
		"dedupe_window = \"ten minutes\"":                                                             `duration "ten minutes"`,
		"dedupe_window = \"-5m\"":                                                                     "dedupe_window -5m0s: must not be negative",
		"dedupe_window = 600":                                                                         "dedupe_window",
		"[thresholds]\nkey_unused = \"99999999999d\"":                                                 "too large",
		"[auto_revoke]\ndetectors = [\"replay\", \"nope\"]":                                           `auto_revoke.detectors: unknown detector "nope"`,
		hook + "detectors = [\"tamperr\"]":                                                            `webhook[0].detectors: unknown detector "tamperr"`,
		hook + "min_severity = \"high\"":                                                              `webhook[0].min_severity "high"`,
		hook + "max_attempts = 0\nmax_attempts = 1":                                                   "line",
		hook + "max_attempts = 1000":                                                                  "webhook[0].max_attempts 1000: want 1 to 100",
		hook + "timeout = \"1h\"":                                                                     "webhook[0].timeout",
		hook + "secret = \"hunter2hunter2hunter2\"":                                                   "inline secrets are refused",
		"[[webhook]]\nurl = \"https://h.example/\"":                                                   "a secret is required",
		"[[webhook]]\nurl = \"https://h/\"\nsecret_env = \"ALERT_SHORT_SECRET\"":                      "use at least 16",
		"[[webhook]]\nurl = \"https://h/\"\nsecret_env = \"ALERT_UNSET_XYZ\"":                         "ALERT_UNSET_XYZ is not set",
		"[[webhook]]\nurl = \"https://h/\"\nsecret_file = \"missing.secret\"":                         "webhook[0].secret_file",
		"[[webhook]]\nurl = \"ftp://h/\"\nsecret_env = \"ALERT_TEST_SECRET\"":                         "want an http:// or https:// URL",
		"[[webhook]]\nsecret_env = \"ALERT_TEST_SECRET\"":                                             "webhook[0].url: required",
		"[[webhook]]\nurl = \"http://h/\"\nsecret_env = \"ALERT_TEST_SECRET\"\nca_file = \"ca.pem\"":  "ca_file: applies only to https",
		"[[webhook]]\nurl = \"https://h/\"\nsecret_env = \"ALERT_TEST_SECRET\"\nca_file = \"ca.pem\"": "ca_file",
		"[[syslog]]\nnetwork = \"tls\"\naddress = \"h:1\"":                                            `syslog[0].network "tls"`,
		"[[syslog]]\nnetwork = \"udp\"\naddress = \"h\"":                                              `syslog[0].address "h": want host:port`,
		"[[syslog]]\nnetwork = \"udp\"\naddress = \"h:1\"\nfacility = \"local8\"":                     `facility "local8"`,
		"[[syslog]]\nnetwork = \"udp\"\naddress = \"h:1\"\nframing = \"lf\"":                          "framing: applies only to tcp and unix",
		"[[syslog]]\nname=\"a\"\nnetwork = \"udp\"\naddress = \"h:1\"\n[[syslog]]\nname=\"a\"\nnetwork = \"udp\"\naddress = \"h:2\"": `name "a": another sink`,
		"[[silence.expect]]\nevery = \"1m\"":                                                               "silence.expect[0].log: required",
		"[[silence.expect]]\nlog = \"Billing\"\nevery = \"1m\"":                                            `log "Billing": not a log name`,
		"[[silence.expect]]\nlog = \"billing\"":                                                            "silence.expect[0].every: required",
		"[[silence.expect]]\nlog = \"b\"\nevery = \"1m\"\n[[silence.expect]]\nlog = \"b\"\nevery = \"2m\"": "same log, key and source",
		"[thresholds]\nburst_factor = 0.5":                                                                 "burst_factor 0.5: want a number above 1",
		"[thresholds]\nburst_factor = nan":                                                                 "burst_factor NaN",
		"[thresholds]\nauth_failures = 0":                                                                  "auth_failures 0: want at least 1",
		"[thresholds]\nauth_failures_window = \"0\"":                                                       "auth_failures_window 0s: want more than 0",
		"[thresholds]\ntwo_networks_prefix_v4 = 33":                                                        "two_networks_prefix_v4 33: want 0 to 32",
		"[thresholds]\ntwo_networks_prefix_v6 = -1":                                                        "two_networks_prefix_v6 -1",
		"node = \"a\\nb\"":                                                                                 "node",
		"[[webhook]\nurl = 1":                                                                              "line 2",
	} {
		_, err := parse(t, text)
		if err == nil {
			t.Errorf("accepted:\n%s", text)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("config:\n%s\nerror %q, want it to contain %q", text, err, want)
		}
	}
}

func TestConfigSecretFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.secret"), []byte(exampleSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := "[[webhook]]\nurl = \"https://u:pw123@h.example/x?token=tok456\"\nsecret_file = \"hook.secret\"\n"
	if err := os.WriteFile(filepath.Join(dir, "alerts.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(filepath.Join(dir, "alerts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Webhooks[0].secret) != exampleSecret {
		t.Errorf("secret %q (trailing newline not trimmed?)", c.Webhooks[0].secret)
	}
	red := string(c.Redacted())
	for _, s := range []string{exampleSecret, "pw123", "tok456"} {
		if strings.Contains(red, s) {
			t.Errorf("%q in Redacted: %s", s, red)
		}
	}
	if !strings.Contains(red, "h.example/x") || !strings.Contains(red, "hook.secret") {
		t.Errorf("Redacted lost too much: %s", red)
	}
	if strings.Contains(string(c.Canonical()), exampleSecret) {
		t.Error("secret in Canonical")
	}
	// A directory is not a secret file.
	if _, err := parse(t, "[[webhook]]\nurl = \"https://h/\"\nsecret_file = \""+dir+"\""); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as secret file: %v", err)
	}
}

// End to end: sinks built from a config deliver to real receivers.
func TestConfigSinksDeliver(t *testing.T) {
	t.Setenv("ALERT_TEST_SECRET", string(testSecret))
	rc := newReceiver(t, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := parse(t, `
[[webhook]]
url = "`+rc.srv.URL+`/hook"
secret_env = "ALERT_TEST_SECRET"
detectors = ["replay"]

[[syslog]]
network = "udp"
address = "`+pc.LocalAddr().String()+`"
facility = "local3"
app_name = "vellum-test"
hostname = "host-a"
min_severity = "critical"
`)
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := c.Sinks("1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDispatcher(sinks, DispatchOptions{})
	low := syslogAlert()
	low.Severity, low.Detector = Info, Burst // neither sink wants it
	d.Send(low)
	d.Send(syslogAlert())
	got := <-rc.got
	if got.err != nil || got.header.Get("User-Agent") != "vellum/1.2.3" || got.header.Get("Vellum-Alert-Detector") != Replay {
		t.Errorf("webhook got %v %v", got.err, got.header)
	}
	buf := make([]byte, 65536)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkMessage(t, string(buf[:n]), 19)
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := rc.hits.Load(); n != 1 {
		t.Errorf("webhook hits %d", n)
	}
	_ = http.StatusOK
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "90s": 90 * time.Second, "7d": 168 * time.Hour, "1d12h": 36 * time.Hour, "0d": 0, "1h30m": 90 * time.Minute,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1", "7 d", "1d-1h", "1.5d", "1dd", "106752d"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("%q accepted as %v", in, got)
		}
	}
}

func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "docs", "alerts.example.toml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(""))
	f.Add([]byte("[[webhook]]\nurl = \"https://h/\"\nsecret_env = \"X\"\n"))
	f.Add([]byte("[thresholds]\nburst_factor = 1e400\nkey_unused = \"9223372036854775807ns\""))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, dir)
		if err != nil {
			if c != nil {
				t.Fatal("config and error")
			}
			return
		}
		can := c.Canonical()
		if !json.Valid(can) || !json.Valid(c.Redacted()) || len(c.Digest()) != 64 {
			t.Fatalf("bad outputs for %q", data)
		}
		if !bytes.Equal(can, c.Canonical()) {
			t.Fatal("Canonical not stable")
		}
		if _, err := c.Sinks("fuzz"); err != nil {
			t.Fatalf("valid config, Sinks: %v", err)
		}
	})
}
