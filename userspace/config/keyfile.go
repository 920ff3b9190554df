package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// CookieKeySize is the size of an http_cookie key: AES-256, as the cookie
// codec (l7/cookie.KeySize) seals with.
const CookieKeySize = 32

// MaxCookieKeys bounds a profile's key list: the codec tries every key on
// every cookie (l7/cookie.MaxKeys), so the list must stay short.
const MaxCookieKeys = 16

// ParseKey accepts a key as 32 raw bytes, or as text (surrounding white
// space ignored) in standard or URL base64, padded or not, or in hex.
func ParseKey(data []byte) ([]byte, error) {
	if len(data) == CookieKeySize && !printable(data) {
		return append([]byte(nil), data...), nil
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return nil, errors.New("key is empty")
	}
	// 64 hex digits are also valid base64 (of 48 bytes): try hex first.
	if len(s) == 2*CookieKeySize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, e := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := e.DecodeString(s); err == nil {
			if len(k) != CookieKeySize {
				return nil, fmt.Errorf("key decodes (base64) to %d bytes; AES-256 needs %d", len(k), CookieKeySize)
			}
			return k, nil
		}
	}
	if k, err := hex.DecodeString(s); err == nil {
		if len(k) != CookieKeySize {
			return nil, fmt.Errorf("key decodes (hex) to %d bytes; AES-256 needs %d", len(k), CookieKeySize)
		}
		return k, nil
	}
	return nil, fmt.Errorf("key must be %d raw bytes, or base64 or hex text of %d bytes", CookieKeySize, CookieKeySize)
}

// printable reports whether b looks like text, in which case a 32-byte key
// file is parsed as text (32 hex digits, say, are 16 bytes, not a key).
func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			if c != '\n' && c != '\r' && c != '\t' {
				return false
			}
		}
	}
	return true
}

// LoadKeyFile reads and parses a key file (see ParseKey).
func LoadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > 4096 {
		return nil, fmt.Errorf("%s is %d bytes; a key file holds one 32-byte key", path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ValidName reports whether s is a usable cookie name: an RFC 6265 token of
// at most 64 characters.
func ValidName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}
