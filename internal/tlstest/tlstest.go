// Package tlstest makes a private certificate authority for tests: a CA, a
// server certificate for 127.0.0.1 and localhost, and a client certificate,
// written as PEM files into a test's temporary directory. It is for _test
// files and test helpers only; nothing here is for production keys.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Files are the PEM files of one test CA.
type Files struct {
	CA         string // the CA certificate
	ServerCert string // for 127.0.0.1, ::1 and localhost, signed by CA
	ServerKey  string
	ClientCert string // client authentication, CN "orchestrator", signed by CA
	ClientKey  string
	// OtherCA is a second, unrelated CA: a peer trusting only it must refuse
	// the certificates above.
	OtherCA string
}

// New writes a fresh CA and its certificates into tb.TempDir().
func New(tb testing.TB) Files {
	tb.Helper()
	dir := tb.TempDir()
	ca, caKey := newCA(tb, "test CA")
	other, _ := newCA(tb, "other CA")
	f := Files{
		CA: write(tb, dir, "ca.pem", "CERTIFICATE", ca.Raw), OtherCA: write(tb, dir, "other-ca.pem", "CERTIFICATE", other.Raw),
	}
	f.ServerCert, f.ServerKey = leaf(tb, dir, "server", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	f.ClientCert, f.ClientKey = leaf(tb, dir, "client", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "orchestrator"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return f
}

var serial int64

func template(cn string) *x509.Certificate {
	serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano() + serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("tlstest: key: %v", err)
	}
	return k
}

func newCA(tb testing.TB, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	tb.Helper()
	key := newKey(tb)
	t := template(cn)
	t.IsCA, t.BasicConstraintsValid = true, true
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, t, t, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("tlstest: CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: CA: %v", err)
	}
	return cert, key
}

func leaf(tb testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, spec *x509.Certificate) (certFile, keyFile string) {
	tb.Helper()
	key := newKey(tb)
	t := template(spec.Subject.CommonName)
	t.DNSNames, t.IPAddresses, t.ExtKeyUsage = spec.DNSNames, spec.IPAddresses, spec.ExtKeyUsage
	t.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, t, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("tlstest: %s certificate: %v", name, err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("tlstest: %s key: %v", name, err)
	}
	return write(tb, dir, name+".pem", "CERTIFICATE", der), write(tb, dir, name+"-key.pem", "PRIVATE KEY", kb)
}

func write(tb testing.TB, dir, name, typ string, der []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("tlstest: %v", err)
	}
	return p
}

// VerifyingServer is the TLS configuration of a server that presents
// ServerCert and requires a client certificate signed by CA (NATS "tls
// verify").
func (f Files) VerifyingServer(tb testing.TB) *tls.Config {
	tb.Helper()
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		tb.Fatal(err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		tb.Fatalf("no certificate in %s", f.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}
