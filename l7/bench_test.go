package l7

import (
	"io"
	"net/http"
	"testing"

	"github.com/limpet-lb/limpet/l7/cookie"
)

// BenchmarkProxyCookie measures keep-alive clients with a valid
// persistence cookie through the proxy to a trivial member: opening the
// cookie, choosing, proxying and logging (to memory).
func BenchmarkProxyCookie(b *testing.B) {
	ms := twoMembers(b)
	h := startProxy(b, cookieYAML("", ""), ms, nil)
	name := cookie.DeriveName(testKey, "vs:web")
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	resp, err := c.Get(h.urls["web"])
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	v := cookieValue(setCookies(resp, name)[0])
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, h.urls["web"], nil)
			req.Header.Set("Cookie", name+"="+v)
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
