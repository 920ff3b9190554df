package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for tests: ECDSA P-256, valid from an hour
// ago for a day.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Pool holds Cert alone, to verify what the CA issued.
	Pool *x509.CertPool
}

// PeerUsages are the usages of a certificate that both serves and dials,
// as a mirroring peer's does.
var PeerUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

func serial() (*big.Int, error) { return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120)) }

func template(name string, usages []x509.ExtKeyUsage, hosts []string) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	return t, nil
}

// MintCA makes a CA named name.
func MintCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := template(name, nil, nil)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, Key: key, Pool: pool}, nil
}

// NewCA is MintCA for a test: an error fails tb.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	ca, err := MintCA(name)
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

// Mint issues a certificate named name for hosts (IP addresses or DNS
// names) with usages; nil usages mean server authentication.
func (ca *CA) Mint(name string, usages []x509.ExtKeyUsage, hosts ...string) (tls.Certificate, error) {
	return mint(ca, name, usages, hosts)
}

// Issue is Mint for a test: an error fails tb.
func (ca *CA) Issue(tb testing.TB, name string, usages []x509.ExtKeyUsage, hosts ...string) tls.Certificate {
	tb.Helper()
	c, err := ca.Mint(name, usages, hosts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// PEM is the CA's certificate, PEM-encoded.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// MintSelfSigned makes a self-signed server certificate for hosts.
func MintSelfSigned(name string, hosts ...string) (tls.Certificate, error) {
	return mint(nil, name, nil, hosts)
}

// SelfSigned is MintSelfSigned for a test: an error fails tb.
func SelfSigned(tb testing.TB, hosts ...string) tls.Certificate {
	tb.Helper()
	c, err := MintSelfSigned("limpet test", hosts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// mint issues a certificate signed by ca, or self-signed when ca is nil.
func mint(ca *CA, name string, usages []x509.ExtKeyUsage, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	if usages == nil {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl, err := template(name, usages, hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// EncodePEM returns a certificate's chain and its key, PEM-encoded.
func EncodePEM(c tls.Certificate) (cert, key []byte, err error) {
	for _, der := range c.Certificate {
		cert = append(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// WriteFiles writes a certificate and its key as PEM files named certName
// and keyName in dir, and returns their paths.
func WriteFiles(dir, certName, keyName string, c tls.Certificate) (certFile, keyFile string, err error) {
	cp, kp, err := EncodePEM(c)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, certName), filepath.Join(dir, keyName)
	err = errors.Join(os.WriteFile(certFile, cp, 0o600), os.WriteFile(keyFile, kp, 0o600))
	return certFile, keyFile, err
}

// WritePEM is WriteFiles for a test: an error fails tb.
func WritePEM(tb testing.TB, dir, certName, keyName string, c tls.Certificate) (certFile, keyFile string) {
	tb.Helper()
	certFile, keyFile, err := WriteFiles(dir, certName, keyName, c)
	if err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile
}
