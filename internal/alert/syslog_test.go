package alert

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rfc5424 is a parsed RFC 5424 message.
type rfc5424 struct {
	pri                                    int
	version                                string
	timestamp                              time.Time
	hostname, appName, procID, msgID, sdID string
	params                                 map[string]string
	msg                                    string
	bom                                    bool
}

// parse5424 parses one message strictly enough to catch format mistakes:
// one structured data element, escapes as RFC 5424 §6.3.3 says.
func parse5424(t *testing.T, raw string) rfc5424 {
	t.Helper()
	var m rfc5424
	fail := func(format string, args ...any) rfc5424 {
		t.Helper()
		t.Fatalf("bad RFC 5424 message %q: %s", raw, fmt.Sprintf(format, args...))
		return m
	}
	if !strings.HasPrefix(raw, "<") {
		return fail("no PRI")
	}
	end := strings.IndexByte(raw, '>')
	if end < 2 || end > 4 {
		return fail("PRI")
	}
	pri, err := strconv.Atoi(raw[1:end])
	if err != nil || pri > 191 || (len(raw[1:end]) > 1 && raw[1] == '0') {
		return fail("PRI %q", raw[1:end])
	}
	m.pri = pri
	rest := raw[end+1:]
	fields := strings.SplitN(rest, " ", 7)
	if len(fields) != 7 {
		return fail("too few header fields")
	}
	m.version = fields[0]
	m.timestamp, err = time.Parse(time.RFC3339Nano, fields[1])
	if err != nil {
		return fail("timestamp: %v", err)
	}
	for i, max := range []int{255, 48, 128, 32} {
		if !headerField(fields[2+i], max) {
			return fail("header field %d %q", 2+i, fields[2+i])
		}
	}
	m.hostname, m.appName, m.procID, m.msgID = fields[2], fields[3], fields[4], fields[5]
	sd := fields[6]
	if !strings.HasPrefix(sd, "[") {
		return fail("no SD element")
	}
	i := 1
	for i < len(sd) && sd[i] != ' ' && sd[i] != ']' {
		i++
	}
	m.sdID = sd[1:i]
	m.params = map[string]string{}
	for i < len(sd) && sd[i] == ' ' {
		i++
		j := strings.IndexByte(sd[i:], '=')
		if j < 1 || j > 32 {
			return fail("SD-PARAM name")
		}
		name := sd[i : i+j]
		i += j + 1
		if i >= len(sd) || sd[i] != '"' {
			return fail("SD-PARAM %s: no opening quote", name)
		}
		i++
		var v strings.Builder
		for {
			if i >= len(sd) {
				return fail("SD-PARAM %s: unterminated", name)
			}
			c := sd[i]
			if c == '\\' && i+1 < len(sd) && strings.IndexByte(`"\]`, sd[i+1]) >= 0 {
				v.WriteByte(sd[i+1])
				i += 2
				continue
			}
			if c == '"' {
				i++
				break
			}
			if c == ']' {
				return fail("SD-PARAM %s: unescaped ]", name)
			}
			v.WriteByte(c)
			i++
		}
		if _, dup := m.params[name]; dup {
			return fail("duplicate SD-PARAM %s", name)
		}
		m.params[name] = v.String()
	}
	if i >= len(sd) || sd[i] != ']' {
		return fail("SD element not closed")
	}
	i++
	if i < len(sd) {
		if sd[i] != ' ' {
			return fail("no space before MSG")
		}
		m.msg = sd[i+1:]
		m.bom = strings.HasPrefix(m.msg, "\uFEFF")
		m.msg = strings.TrimPrefix(m.msg, "\uFEFF")
	}
	return m
}

func syslogAlert() Alert {
	a := testAlert(7)
	a.Source = `we"ird\source]` // every character that needs escaping
	a.Last = time.Date(2025, 3, 1, 12, 30, 15, 123456000, time.UTC)
	a.Revoked = true
	a.Summary = "A nonce was replayed — größer"
	return a
}

// checkMessage checks every field of a message formatted from syslogAlert.
func checkMessage(t *testing.T, raw string, facility int) {
	t.Helper()
	a := syslogAlert()
	m := parse5424(t, raw)
	want := map[string]string{
		"id": a.ID, "detector": Replay, "severity": Critical, "log": "billing",
		"key": "k_1", "source": a.Source, "count": "8", "entry": "7", "node": "vellum-1",
		"revoked": "true",
	}
	if m.pri != facility*8+2 {
		t.Errorf("PRI %d, want %d", m.pri, facility*8+2)
	}
	if m.version != "1" {
		t.Errorf("VERSION %q", m.version)
	}
	if !m.timestamp.Equal(a.Last) {
		t.Errorf("TIMESTAMP %v, want %v", m.timestamp, a.Last)
	}
	if m.hostname != "host-a" || m.appName != "vellum-test" || m.procID != strconv.Itoa(os.Getpid()) || m.msgID != Replay {
		t.Errorf("header %q %q %q %q", m.hostname, m.appName, m.procID, m.msgID)
	}
	if m.sdID != SDID {
		t.Errorf("SD-ID %q", m.sdID)
	}
	if fmt.Sprint(m.params) != fmt.Sprint(want) {
		t.Errorf("SD params\n got %v\nwant %v", m.params, want)
	}
	if !m.bom || m.msg != a.Summary+" Action: "+a.Action {
		t.Errorf("MSG %q (BOM %v)", m.msg, m.bom)
	}
}

func newTestSyslog(t *testing.T, network, address string, framing string) *Syslog {
	t.Helper()
	s, err := NewSyslog(SyslogOptions{Network: network, Address: address, Facility: "local3",
		AppName: "vellum-test", Hostname: "host-a", Framing: framing})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSyslogUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s := newTestSyslog(t, "udp", pc.LocalAddr().String(), "")
	d := NewDispatcher([]Sink{s}, DispatchOptions{})
	d.Send(syslogAlert())
	buf := make([]byte, 65536)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkMessage(t, string(buf[:n]), 19)
	if err := d.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// readOctetCounted reads RFC 6587 octet-counted frames into out.
func readOctetCounted(c net.Conn, out chan<- string) {
	r := bufio.NewReader(c)
	for {
		n, err := r.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil || size <= 0 {
			out <- "BAD FRAME " + n
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(r, msg); err != nil {
			return
		}
		out <- string(msg)
	}
}

func TestSyslogTCPOctetCounting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 100)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		readOctetCounted(c, got)
	}()
	s := newTestSyslog(t, "tcp", ln.Addr().String(), "")
	for i := 0; i < 3; i++ { // three frames on one connection
		if err := s.Deliver(context.Background(), syslogAlert()); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		checkMessage(t, <-got, 19)
	}
}

// The receiver restarts: the sink notices and reconnects, and nothing
// sent after the old connection was seen to close is lost.
func TestSyslogTCPReconnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	s := newTestSyslog(t, "tcp", ln.Addr().String(), "")
	if err := s.Deliver(context.Background(), syslogAlert()); err != nil {
		t.Fatal(err)
	}
	first := <-conns
	got1 := make(chan string, 10)
	go readOctetCounted(first, got1)
	checkMessage(t, <-got1, 19)
	first.Close()

	// Deliver until a message arrives on a second connection.
	got2 := make(chan string, 1000)
	var second net.Conn
	for i := 0; second == nil; i++ {
		if i > 1000 {
			t.Fatal("no reconnect")
		}
		s.Deliver(context.Background(), syslogAlert()) // may fail once: the dispatcher retries
		select {
		case second = <-conns:
			defer second.Close()
			go readOctetCounted(second, got2)
		case <-time.After(10 * time.Millisecond):
		}
	}
	checkMessage(t, <-got2, 19)
	if err := s.Deliver(context.Background(), syslogAlert()); err != nil {
		t.Fatal(err)
	}
	checkMessage(t, <-got2, 19)
}

func TestSyslogUnixgramAndUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "vsl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	gpath := filepath.Join(dir, "g.sock")
	pc, err := net.ListenPacket("unixgram", gpath)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s := newTestSyslog(t, "unixgram", gpath, "")
	if err := s.Deliver(context.Background(), syslogAlert()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	checkMessage(t, string(buf[:n]), 19)

	spath := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", spath)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan string, 10)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	s2 := newTestSyslog(t, "unix", spath, "lf")
	for i := 0; i < 2; i++ {
		if err := s2.Deliver(context.Background(), syslogAlert()); err != nil {
			t.Fatal(err)
		}
	}
	checkMessage(t, <-lines, 19)
	checkMessage(t, <-lines, 19)
}

func TestSyslogNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := newTestSyslog(t, "tcp", addr, "")
	if err := s.Deliver(context.Background(), syslogAlert()); err == nil || IsPermanent(err) {
		t.Errorf("Deliver = %v, want a retryable error", err)
	}
}

func TestSyslogFormatDetails(t *testing.T) {
	s := newTestSyslog(t, "udp", "127.0.0.1:9", "")
	a := syslogAlert()
	for sev, want := range map[string]int{Critical: 2, Warning: 4, Info: 6, "": 5} {
		a.Severity = sev
		if m := parse5424(t, string(s.Format(a))); m.pri != 19*8+want {
			t.Errorf("%q: PRI %d", sev, m.pri)
		}
	}
	// Empty subject fields are left out; Entry -1 too.
	b := Alert{ID: "al_x", Detector: Tamper, Severity: Critical, Summary: "s", Entry: -1}
	m := parse5424(t, string(s.Format(b)))
	if fmt.Sprint(m.params) != fmt.Sprint(map[string]string{"id": "al_x", "detector": Tamper, "severity": Critical, "count": "0"}) {
		t.Errorf("params %v", m.params)
	}
	if m.msg != "s" {
		t.Errorf("msg %q", m.msg)
	}
	// A huge summary is cut to a datagram, on a character boundary, and
	// still parses.
	a.Summary = strings.Repeat("ü", 10000)
	msg := s.Format(a)
	cut := truncateUTF8(msg, MaxDatagram)
	if len(cut) > MaxDatagram || len(cut) < MaxDatagram-1 {
		t.Errorf("cut to %d", len(cut))
	}
	parse5424(t, string(cut))
	if !strings.HasPrefix(string(msg), string(cut)) || !strings.HasSuffix(string(cut), "ü") {
		t.Error("bad cut")
	}
}

func TestNewSyslogRejects(t *testing.T) {
	for name, o := range map[string]SyslogOptions{
		"network":  {Network: "tls", Address: "x:1"},
		"address":  {Network: "udp"},
		"facility": {Network: "udp", Address: "x:1", Facility: "local9"},
		"app name": {Network: "udp", Address: "x:1", AppName: "has space"},
		"hostname": {Network: "udp", Address: "x:1", Hostname: strings.Repeat("h", 256)},
		"framing":  {Network: "tcp", Address: "x:1", Framing: "nul"},
	} {
		if _, err := NewSyslog(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
