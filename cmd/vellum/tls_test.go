package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestPKI writes a CA certificate and a server certificate and key for
// 127.0.0.1, signed by that CA, as PEM files in dir.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vellum test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}

// TestTLS: serve --tls-cert/--tls-key answers HTTPS with HTTP/2, the client
// commands trust it with --ca (or VELLUM_CA), and without the CA they fail
// with a hint.
func TestTLS(t *testing.T) {
	caFile, certFile, keyFile := writeTestPKI(t, t.TempDir())
	e := startCLIServerWith(t, "https", "--tls-cert", certFile, "--tls-key", keyFile)
	addr := e.addr
	if !strings.Contains(e.logs.String(), "serving on https://"+addr) {
		t.Errorf("serve's banner does not say https: %s", e.logs.String())
	}

	// Without the CA: refused, with a hint naming --ca.
	_, stderr, err := e.run("", "logs", "create", "tls")
	if err == nil || !strings.Contains(stderr, "--ca") {
		t.Fatalf("without --ca: err %v, stderr %q; want a certificate error with a hint naming --ca", err, stderr)
	}
	// With --ca, and with VELLUM_CA.
	e.ok("", "logs", "create", "--ca", caFile, "tls")
	e.env["VELLUM_CA"] = caFile
	e.ok(`{"action":"user.create","actor":{"id":"alice"}}`, "append", "--log", "tls")
	if out := e.ok("", "verify", "--log", "tls", "--full"); !strings.Contains(out, "full: 1 entries of tls") {
		t.Errorf("verify --full over TLS: %q", out)
	}
	if _, stderr, err := e.run("", "logs", "create", "--ca", certFile+".missing", "x"); err == nil || !strings.Contains(stderr, "--ca") {
		t.Errorf("a missing --ca file: %v %q", err, stderr)
	}

	// HTTP/2 is offered (ALPN h2).
	pem, _ := os.ReadFile(caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err := hc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Errorf("GET /healthz over TLS: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	// Plain HTTP to the TLS port gets no answer from the API.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP to the TLS listener answered 200")
		}
	}
}

func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	_, certFile, keyFile := writeTestPKI(t, dir)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", certFile}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", keyFile}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", certFile, "--tls-key", certFile}, "loading the TLS certificate"},
	} {
		var stderr bytes.Buffer
		m := &Main{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(string) string { return "" }}
		err := m.Run(context.Background(), append([]string{"serve", "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
