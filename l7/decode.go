package l7

import (
	"fmt"
	"time"

	"github.com/limpet-lb/limpet/l7/cookie"
)

// CookieInfo is a decoded persistence cookie.
type CookieInfo struct {
	// Member is the pool member's address and port.
	Member string `json:"member"`
	// VirtualServer issued the cookie.
	VirtualServer string `json:"virtual_server"`
	// Issued is when the cookie was created.
	Issued time.Time `json:"issued"`
	// AgeSeconds is how old the cookie is at the time of decoding.
	AgeSeconds int64 `json:"age_seconds"`
	// KeyIndex is the key that opened it (0 is the key that seals new cookies).
	KeyIndex int `json:"key_index"`
}

// DecodeCookie opens a persistence cookie value (VALUE, NAME=VALUE or a
// Set-Cookie line) with the given 32-byte keys, for operators
// (`limpet cookie decode`). The error says why a value does not open:
// bad encoding, truncated, wrong or rotated-out key, or tampered.
func DecodeCookie(value string, keys [][]byte, now time.Time) (CookieInfo, error) {
	p, idx, err := cookie.Decode(value, keys)
	if err != nil {
		return CookieInfo{}, err
	}
	return CookieInfo{
		Member:        p.Member.String(),
		VirtualServer: p.VirtualServer,
		Issued:        p.Issued,
		AgeSeconds:    int64(now.Sub(p.Issued) / time.Second),
		KeyIndex:      idx,
	}, nil
}

// String is a one-line summary.
func (c CookieInfo) String() string {
	return fmt.Sprintf("member %s virtual_server %s issued %s (age %ds) key %d",
		c.Member, c.VirtualServer, c.Issued.Format(time.RFC3339), c.AgeSeconds, c.KeyIndex)
}
