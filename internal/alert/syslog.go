package alert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Syslog messages
//
// The syslog sink writes RFC 5424 messages:
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG
//
// PRI is facility·8 + severity, the facility configured (default authpriv,
// 10: alerts are security messages, and authpriv is the facility syslog
// daemons keep apart from the general log and readable only by root) and
// the severity from the alert's: critical → 2 (crit), warning → 4
// (warning), info → 6 (informational), anything else → 5 (notice).
// TIMESTAMP is the alert's latest occurrence in UTC with microseconds;
// MSGID is the detector; the structured data element is
//
//	[vellum@32473 id="…" detector="…" severity="…" log="…" key="…" source="…" count="…" entry="…" node="…" revoked="true"]
//
// with empty parameters left out, values cut to MaxParam bytes, and '"', '\' and ']' escaped with a
// backslash (RFC 5424 §6.3.3). 32473 is the private enterprise number
// RFC 5612 reserves for documentation; vellum has none of its own.
// MSG is the summary, a space, "Action: " and the action, in UTF-8 and
// so, as RFC 5424 §6.4 requires, preceded by a byte order mark.
//
// Transports: udp (one message per datagram, RFC 5426), tcp and unix
// (stream sockets, octet-counting framing "LEN SP MSG" of RFC 6587
// §3.4.1, or "lf" framing: a message and a newline), unixgram (one
// message per datagram, as /dev/log expects). Datagram messages are cut
// to MaxDatagram bytes. After a write error the connection is closed and
// redialled on the next attempt.

// SDID is the structured data ID of vellum's syslog element.
const SDID = "vellum@32473"

// MaxParam bounds an SD-PARAM value, in bytes before escaping.
const MaxParam = 256

// MaxDatagram bounds a syslog message sent over udp or unixgram.
const MaxDatagram = 8192

// Facilities by name, as in syslog.conf.
var Facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
	"lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"ntp": 12, "security": 13, "console": 14, "solaris-cron": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// DefaultFacility is authpriv.
const DefaultFacility = "authpriv"

// SyslogOptions configures a syslog sink.
type SyslogOptions struct {
	// Name identifies the sink (default "syslog:<network>:<address>").
	Name string
	// Network is udp, tcp, unix or unixgram; Address is host:port or a
	// socket path.
	Network, Address string
	// Facility is a name from Facilities (default authpriv).
	Facility string
	// AppName is the APP-NAME (default "vellum").
	AppName string
	// Hostname is the HOSTNAME (default os.Hostname()).
	Hostname string
	// Framing, for tcp and unix: "octet-counting" (default) or "lf".
	Framing string
	// Timeout bounds a dial and a write (default 5s).
	Timeout time.Duration
}

// Syslog is the syslog sink.
type Syslog struct {
	name, network, address string
	facility               int
	appName, hostname      string
	procID                 string
	lf                     bool
	timeout                time.Duration
	dial                   func(ctx context.Context, network, address string) (net.Conn, error)

	mu   sync.Mutex
	conn net.Conn
}

// NewSyslog checks opts and returns the sink. It does not connect: the
// first Deliver does.
func NewSyslog(opts SyslogOptions) (*Syslog, error) {
	s := &Syslog{name: opts.Name, network: opts.Network, address: opts.Address,
		appName: opts.AppName, hostname: opts.Hostname, timeout: opts.Timeout,
		procID: strconv.Itoa(os.Getpid())}
	switch opts.Network {
	case "udp", "tcp", "unix", "unixgram":
	default:
		return nil, fmt.Errorf("syslog network %q: want udp, tcp, unix or unixgram", opts.Network)
	}
	if opts.Address == "" {
		return nil, errors.New("syslog: address is required")
	}
	fac := opts.Facility
	if fac == "" {
		fac = DefaultFacility
	}
	f, ok := Facilities[fac]
	if !ok {
		return nil, fmt.Errorf("syslog facility %q: unknown (want e.g. authpriv, auth, local0…local7)", fac)
	}
	s.facility = f
	switch opts.Framing {
	case "", "octet-counting":
	case "lf":
		s.lf = true
	default:
		return nil, fmt.Errorf("syslog framing %q: want octet-counting or lf", opts.Framing)
	}
	if s.appName == "" {
		s.appName = "vellum"
	}
	if !headerField(s.appName, 48) {
		return nil, fmt.Errorf("syslog app_name %q: want 1 to 48 printable ASCII characters, no spaces", s.appName)
	}
	if s.hostname == "" {
		s.hostname, _ = os.Hostname()
	} else if !headerField(s.hostname, 255) {
		return nil, fmt.Errorf("syslog hostname %q: want 1 to 255 printable ASCII characters, no spaces", s.hostname)
	}
	if !headerField(s.hostname, 255) {
		s.hostname = "-"
	}
	if s.timeout <= 0 {
		s.timeout = 5 * time.Second
	}
	if s.name == "" {
		s.name = "syslog:" + s.network + ":" + s.address
	}
	d := &net.Dialer{}
	s.dial = d.DialContext
	return s, nil
}

// headerField reports whether v is a valid RFC 5424 header field:
// 1 to max PRINTUSASCII characters (33–126).
func headerField(v string, max int) bool {
	if len(v) == 0 || len(v) > max {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 33 || v[i] > 126 {
			return false
		}
	}
	return true
}

// sanitizeHeader makes v a valid header field, or "-".
func sanitizeHeader(v string, max int) string {
	b := []byte(v)
	for i, c := range b {
		if c < 33 || c > 126 {
			b[i] = '_'
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// Name is the sink's name.
func (s *Syslog) Name() string { return s.name }

// syslogSeverity maps an alert severity to a syslog severity.
func syslogSeverity(sev string) int {
	switch sev {
	case Critical:
		return 2
	case Warning:
		return 4
	case Info:
		return 6
	}
	return 5
}

// escapeSD escapes an SD-PARAM value (RFC 5424 §6.3.3).
func escapeSD(v string) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	if !strings.ContainsAny(v, `"\]`) {
		return v
	}
	var b strings.Builder
	for _, r := range v {
		if r == '"' || r == '\\' || r == ']' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Format returns a's RFC 5424 message (without transport framing).
func (s *Syslog) Format(a Alert) []byte {
	ts := a.Last
	if ts.IsZero() {
		ts = a.Since
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>1 %s %s %s %s %s ",
		s.facility*8+syslogSeverity(a.Severity),
		ts.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		s.hostname, s.appName, s.procID, sanitizeHeader(a.Detector, 32))
	b.WriteString("[" + SDID)
	param := func(k, v string) {
		if v != "" {
			// Bounded, so that a datagram's cut falls in MSG.
			v = string(truncateUTF8([]byte(v), MaxParam))
			b.WriteString(" " + k + `="` + escapeSD(v) + `"`)
		}
	}
	param("id", a.ID)
	param("detector", a.Detector)
	param("severity", a.Severity)
	param("log", a.Log)
	param("key", a.KeyID)
	param("source", a.Source)
	param("count", strconv.FormatInt(a.Count, 10))
	if a.Entry >= 0 {
		param("entry", strconv.FormatInt(a.Entry, 10))
	}
	param("node", a.Node)
	if a.Revoked {
		param("revoked", "true")
	}
	b.WriteString("] \uFEFF")
	msg := a.Summary
	if a.Action != "" {
		msg += " Action: " + a.Action
	}
	b.WriteString(strings.ToValidUTF8(msg, "\uFFFD"))
	return []byte(b.String())
}

func (s *Syslog) datagram() bool { return s.network == "udp" || s.network == "unixgram" }

// Deliver writes a once; after a failure on an existing connection it
// redials and writes once more before giving up.
func (s *Syslog) Deliver(ctx context.Context, a Alert) error {
	msg := s.Format(a)
	if s.datagram() && len(msg) > MaxDatagram {
		msg = truncateUTF8(msg, MaxDatagram)
	}
	var frame []byte
	switch {
	case s.datagram():
		frame = msg
	case s.lf:
		frame = append(msg, '\n')
	default:
		frame = append([]byte(strconv.Itoa(len(msg))+" "), msg...)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	reused := s.conn != nil
	err := s.write(ctx, frame)
	if err != nil && reused && ctx.Err() == nil {
		err = s.write(ctx, frame)
	}
	if err != nil {
		return fmt.Errorf("%s: %v", s.name, err)
	}
	return nil
}

func (s *Syslog) write(ctx context.Context, frame []byte) error {
	if s.conn != nil && !s.datagram() && peerClosed(s.conn) {
		s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		dctx, cancel := context.WithTimeout(ctx, s.timeout)
		c, err := s.dial(dctx, s.network, s.address)
		cancel()
		if err != nil {
			return err
		}
		s.conn = c
	}
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c := s.conn
	c.SetWriteDeadline(deadline)
	// Unblock the write if ctx ends first.
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := c.Write(frame)
	stop()
	if err != nil {
		c.Close()
		s.conn = nil
	}
	return err
}

// peerClosed reports whether the receiver closed a stream connection.
// Syslog receivers never send, so a read that does not time out at once
// means EOF or an error (this costs a millisecond per alert): without this check the first message after the
// receiver went away would be written into a dead socket and lost.
func peerClosed(c net.Conn) bool {
	// A deadline already past would fail before looking at the socket.
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Close closes the connection, if any.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// truncateUTF8 cuts b to at most n bytes without splitting a character.
func truncateUTF8(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[:n]
	// b was valid UTF-8 before the cut, so an invalid end is a split
	// character: drop its bytes.
	for len(b) > 0 {
		if r, size := utf8.DecodeLastRune(b); r != utf8.RuneError || size > 1 {
			break
		}
		b = b[:len(b)-1]
	}
	return b
}
