package metrics

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestGuard(t *testing.T) {
	g := NewGuard(nil)
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	do := func(auth string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("WWW-Authenticate")
	}
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	if code, _ := do(""); code != http.StatusTeapot {
		t.Fatalf("no credentials set: %d, want the handler", code)
	}
	g.Set(&Credentials{Username: "ops", Secret: []byte("pw")})
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401}, {basic("ops", "pw"), 418}, {basic("ops", "pw2"), 401}, {basic("Ops", "pw"), 401},
		{basic("ops", ""), 401}, {"Bearer pw", 401}, {"Basic !!!", 401},
	} {
		if code, chal := do(tc.auth); code != tc.want || (code == 401 && chal != `Basic realm="limpet", charset="UTF-8"`) {
			t.Errorf("basic, %q: %d %q, want %d", tc.auth, code, chal, tc.want)
		}
	}
	g.Set(&Credentials{Bearer: true, Secret: []byte("0123456789abcdef")})
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401}, {"Bearer 0123456789abcdef", 418}, {"bearer 0123456789abcdef", 418}, {"Bearer 0123456789abcdeF", 401},
		{"Bearer ", 401}, {basic("x", "0123456789abcdef"), 401},
	} {
		if code, chal := do(tc.auth); code != tc.want || (code == 401 && chal != `Bearer realm="limpet"`) {
			t.Errorf("bearer, %q: %d %q, want %d", tc.auth, code, chal, tc.want)
		}
	}
	g.Set(nil)
	if code, _ := do(""); code != http.StatusTeapot {
		t.Fatalf("credentials removed: %d", code)
	}
}
