package cookie

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/userspace/config"
)

var (
	k1 = bytes.Repeat([]byte{1}, KeySize)
	k2 = bytes.Repeat([]byte{2}, KeySize)
)

func mustCodec(t testing.TB, keys ...[]byte) *Codec {
	t.Helper()
	c, err := NewCodec(keys)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSealOpenRoundTrip(t *testing.T) {
	c := mustCodec(t, k1)
	issued := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, p := range []Payload{
		{Member: netip.MustParseAddrPort("10.0.0.1:8080"), Issued: issued, VirtualServer: "web"},
		{Member: netip.MustParseAddrPort("[2001:db8::7]:443"), Issued: issued, VirtualServer: strings.Repeat("v", MaxVirtualServerName)},
		{Member: netip.MustParseAddrPort("[::ffff:10.0.0.2]:80"), Issued: issued, VirtualServer: ""},
	} {
		v, err := c.Seal(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(v) > MaxEncodedLen {
			t.Errorf("sealed length %d exceeds MaxEncodedLen %d", len(v), MaxEncodedLen)
		}
		for _, ch := range v {
			if !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
				t.Fatalf("value %q has %q, not base64url", v, ch)
			}
		}
		got, idx, err := c.Open(v)
		if err != nil || idx != 0 {
			t.Fatalf("open: %v idx %d", err, idx)
		}
		want := p
		want.Member = netip.AddrPortFrom(p.Member.Addr().Unmap(), p.Member.Port())
		if got != want {
			t.Errorf("got %+v want %+v", got, want)
		}
	}
}

func TestSealIsRandomized(t *testing.T) {
	c := mustCodec(t, k1)
	p := Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0)}
	a, _ := c.Seal(p)
	b, _ := c.Seal(p)
	if a == b {
		t.Error("two seals of one payload are equal: the nonce is not random")
	}
}

func TestKeyRotation(t *testing.T) {
	p := Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0).UTC(), VirtualServer: "web"}
	oldV, _ := mustCodec(t, k1).Seal(p)
	both := mustCodec(t, k2, k1)
	got, idx, err := both.Open(oldV)
	if err != nil || idx != 1 || got != p {
		t.Fatalf("old cookie under [new, old]: %+v idx %d err %v", got, idx, err)
	}
	newV, _ := both.Seal(p)
	if _, idx, err := mustCodec(t, k2).Open(newV); err != nil || idx != 0 {
		t.Fatalf("the first key seals: idx %d err %v", idx, err)
	}
	if _, _, err := mustCodec(t, k2).Open(oldV); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("old key dropped: want ErrAuthentication, got %v", err)
	}
}

func TestOpenRejects(t *testing.T) {
	c := mustCodec(t, k1)
	good, _ := c.Seal(Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0), VirtualServer: "web"})
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	reenc := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	badVersion := append([]byte(nil), raw...)
	badVersion[0] = 9
	cases := map[string]struct {
		v    string
		want error
	}{
		"empty":          {"", ErrTruncated},
		"not base64":     {"***", ErrEncoding},
		"padded":         {good + "==", ErrEncoding},
		"std alphabet":   {strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+", ErrEncoding},
		"short":          {reenc(raw[:20]), ErrTruncated},
		"missing tag":    {reenc(raw[:len(raw)-1]), ErrAuthentication},
		"too long":       {strings.Repeat("A", MaxEncodedLen+1), ErrTooLong},
		"bad version":    {reenc(badVersion), ErrVersion},
		"trailing bytes": {reenc(append(append([]byte(nil), raw...), 0)), ErrAuthentication},
	}
	for i := 0; i < len(raw); i++ {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x80
		want := ErrAuthentication
		if i == 0 {
			want = ErrVersion
		}
		cases["flip byte "+string(rune('a'+i%26))+string(rune('0'+i/26))] = struct {
			v    string
			want error
		}{reenc(b), want}
	}
	for name, tc := range cases {
		if _, _, err := c.Open(tc.v); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

func TestNewCodecValidatesKeys(t *testing.T) {
	if _, err := NewCodec(nil); err == nil {
		t.Error("no keys accepted")
	}
	if _, err := NewCodec([][]byte{make([]byte, 16)}); err == nil {
		t.Error("16-byte key accepted: AES-256 needs 32")
	}
	many := make([][]byte, MaxKeys+1)
	for i := range many {
		many[i] = k1
	}
	if _, err := NewCodec(many); err == nil {
		t.Error("too many keys accepted")
	}
}

func TestDeriveName(t *testing.T) {
	n := DeriveName(k1, "vs:web")
	if len(n) != NameLen || strings.Trim(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		t.Fatalf("name %q is not eight upper-case letters", n)
	}
	// Golden value: the name must never change between releases, or every
	// client loses its persistence on upgrade.
	if n != "SXOAKSXG" {
		t.Errorf("DeriveName(k1, vs:web) = %q; it changed, which breaks existing cookies", n)
	}
	if DeriveName(k1, "vs:web") != n {
		t.Error("not deterministic")
	}
	if DeriveName(k2, "vs:web") == n || DeriveName(k1, "vs:api") == n {
		t.Error("name should depend on key and scope")
	}
	if !config.ValidName(n) {
		t.Error("derived name is not a valid cookie name")
	}
}

func TestDecodeAcceptsPastedForms(t *testing.T) {
	c := mustCodec(t, k1)
	p := Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0).UTC(), VirtualServer: "web"}
	v, _ := c.Seal(p)
	for _, in := range []string{
		v,
		"  " + v + "\n",
		"JKQBPMSG=" + v,
		`JKQBPMSG="` + v + `"`,
		"Set-Cookie: JKQBPMSG=" + v + "; Path=/; HttpOnly",
		"set-cookie:JKQBPMSG=" + v,
	} {
		got, _, err := Decode(in, [][]byte{k1})
		if err != nil || got != p {
			t.Errorf("Decode(%q): %+v %v", in, got, err)
		}
	}
}

// FuzzOpen feeds arbitrary values to the decoder: it must never panic,
// and anything it accepts must re-seal to a value that opens to the same
// payload (so a forged value can only be a real one).
func FuzzOpen(f *testing.F) {
	c := mustCodec(f, k1, k2)
	good, _ := c.Seal(Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0), VirtualServer: "web"})
	good6, _ := c.Seal(Payload{Member: netip.MustParseAddrPort("[2001:db8::1]:443"), Issued: time.Unix(2e9, 0), VirtualServer: "api"})
	for _, s := range []string{good, good6, good[:10], "", "A", "====", strings.Repeat("A", MaxEncodedLen), "AQ", good + "A", "JKQBPMSG=" + good} {
		f.Add(s)
	}
	var scratch Scratch
	f.Fuzz(func(t *testing.T, v string) {
		p, idx, err := c.Open(v)
		// OpenTo, which the proxy uses, opens in place to the same result.
		view, vidx, verr := c.OpenTo(&scratch, v)
		if verr != err || vidx != idx || (err == nil && (view.Member != p.Member || !view.Issued().Equal(p.Issued) || string(view.VirtualServer) != p.VirtualServer)) {
			t.Fatalf("OpenTo %+v %d %v, Open %+v %d %v", view, vidx, verr, p, idx, err)
		}
		if err != nil {
			if idx > 0 && !errors.Is(err, ErrPayload) {
				t.Fatalf("error %v with key index %d", err, idx)
			}
			return
		}
		if !p.Member.IsValid() || len(p.VirtualServer) > MaxVirtualServerName {
			t.Fatalf("accepted an invalid payload %+v", p)
		}
		again, err := c.Seal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, _, err := c.Open(again)
		if err != nil || q != p {
			t.Fatalf("re-seal: %+v %v, want %+v", q, err, p)
		}
		_, _, _ = Decode(v, [][]byte{k1})
	})
}

func BenchmarkOpen(b *testing.B) {
	c := mustCodec(b, k1, k2)
	v, _ := c.Seal(Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0), VirtualServer: "web"})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.Open(v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenTo(b *testing.B) {
	c := mustCodec(b, k1, k2)
	v, _ := c.Seal(Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0), VirtualServer: "web"})
	var s Scratch
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.OpenTo(&s, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSeal(b *testing.B) {
	c := mustCodec(b, k1)
	p := Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0), VirtualServer: "web"}
	var s Scratch
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = c.AppendSeal(buf[:0], &s, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	c := mustCodec(b, k1)
	p := Payload{Member: netip.MustParseAddrPort("10.0.0.1:80"), Issued: time.Unix(1e9, 0), VirtualServer: "web"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Seal(p); err != nil {
			b.Fatal(err)
		}
	}
}

// The config checks keys and key lists against the codec's limits.
func TestConfigKeyLimitsAreTheCodecs(t *testing.T) {
	if config.CookieKeySize != KeySize || config.MaxCookieKeys != MaxKeys {
		t.Errorf("config allows %d keys of %d bytes; the codec takes %d of %d", config.MaxCookieKeys, config.CookieKeySize, MaxKeys, KeySize)
	}
}
