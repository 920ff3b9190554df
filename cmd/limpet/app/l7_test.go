package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/test/testutil"
)

func writeKey(t *testing.T, k []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cookie.key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCookieKeygenAndDecode(t *testing.T) {
	code, out, _ := limpet(t, "cookie", "keygen")
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(k) != 32 {
		t.Fatalf("keygen: code %d out %q", code, out)
	}
	keyFile := writeKey(t, k)
	codec, _ := cookie.NewCodec([][]byte{k})
	issued := time.Now().Add(-90 * time.Second).Truncate(time.Second)
	v, _ := codec.Seal(cookie.Payload{Member: netip.MustParseAddrPort("10.1.0.12:8080"), Issued: issued, VirtualServer: "shop"})

	code, out, errOut := limpet(t, "cookie", "decode", "--key-file", keyFile, "Set-Cookie: ABCDEFGH="+v+"; Path=/")
	if code != 0 {
		t.Fatalf("decode: %d %s", code, errOut)
	}
	for _, want := range []string{"member          10.1.0.12:8080", "virtual_server  shop", "issued          " + issued.UTC().Format(time.RFC3339), "age             1m3", "key             0 (of 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("decode output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = limpet(t, "cookie", "decode", "-k", writeKey(t, bytes.Repeat([]byte{5}, 32)), "-k", keyFile, "-o", "json", v)
	var info map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &info) != nil || info["member"] != "10.1.0.12:8080" || info["key_index"] != 1.0 {
		t.Fatalf("json decode with a rotated key list: %d %q", code, out)
	}

	code, _, errOut = limpet(t, "cookie", "decode", "-k", writeKey(t, bytes.Repeat([]byte{5}, 32)), v)
	if code != ExitRuntime || !strings.Contains(errOut, "cookie does not open") || !strings.Contains(errOut, "does not authenticate") {
		t.Errorf("wrong key: %d %q", code, errOut)
	}
	code, _, errOut = limpet(t, "cookie", "decode", "-k", keyFile, v[:12])
	if code != ExitRuntime || !strings.Contains(errOut, "too short") {
		t.Errorf("truncated: %d %q", code, errOut)
	}
	if code, _, errOut = limpet(t, "cookie", "decode", v); code != ExitUsage || !strings.Contains(errOut, "--key-file") {
		t.Errorf("no key file: %d %q", code, errOut)
	}
	if code, _, _ = limpet(t, "cookie", "decode", "-k", filepath.Join(t.TempDir(), "missing"), v); code != ExitUsage {
		t.Errorf("missing key file: %d", code)
	}
}

func TestL7CommandServesAndStops(t *testing.T) {
	member := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	defer member.Close()
	mport := netip.MustParseAddrPort(member.Listener.Addr().String()).Port()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	keyFile := writeKey(t, bytes.Repeat([]byte{3}, 32))
	cfg := writeFile(t, fmt.Sprintf(`
persistence_profiles:
  - {name: web, type: http_cookie, cookie_name: LB, keys: [{file: %s}], is_persistent_cookie: true}
pools: [{name: p, members: [{name: a, address: 127.0.0.1, port: %d}]}]
virtual_servers:
  - {name: site, type: http, address: 127.0.0.1, port: %d, pool: p, persistence: web}
`, keyFile, mport, port))
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut testutil.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(&Env{Stdout: &out, Stderr: &errOut, Context: ctx}, []string{"limpet", "l7", "-c", cfg})
	}()
	var resp *http.Response
	var err error
	for i := 0; i < 200; i++ {
		if resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		cancel()
		t.Fatalf("l7 never listened: %v; stderr %s", err, errOut.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello" || !strings.HasPrefix(resp.Header.Get("Set-Cookie"), "LB=") || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("response %q Set-Cookie %q", body, resp.Header.Get("Set-Cookie"))
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("l7 did not stop")
	}
	if !strings.Contains(out.String(), `"msg":"access"`) || !strings.Contains(out.String(), `"virtual_server":"site"`) {
		t.Errorf("access log on stdout: %q", out.String())
	}
	if !strings.Contains(errOut.String(), "Max-Age=0") {
		t.Errorf("the config warning should be logged: %q", errOut.String())
	}
}

func TestL7CommandRefusesBadConfig(t *testing.T) {
	cfg := writeFile(t, `
persistence_profiles: [{name: web, type: http_cookie, timeout: 20000}]
pools: [{name: p, members: [{name: a, address: 127.0.0.1, port: 80}]}]
virtual_servers: [{name: site, type: http, address: 127.0.0.1, port: 80, pool: p, persistence: web}]
`)
	code, _, errOut := limpet(t, "l7", "-c", cfg)
	if code != ExitUsage || !strings.Contains(errOut, "timeout: 20000 must be between 1 and 14400 minutes") || !strings.Contains(errOut, "keys: at least one") {
		t.Errorf("%d %q", code, errOut)
	}
	if code, _, _ := limpet(t, "l7"); code != ExitUsage {
		t.Errorf("no -c: %d", code)
	}
	l4only := writeFile(t, `
pools: [{name: p, members: [{name: a, address: 10.0.0.1, port: 80}]}]
virtual_servers: [{name: v, address: 10.0.0.100, port: 80, protocol: tcp, pool: p}]
`)
	if code, _, errOut := limpet(t, "l7", "-c", l4only); code != ExitUsage || !strings.Contains(errOut, "no virtual server of type http") {
		t.Errorf("l4-only config: %d %q", code, errOut)
	}
}
