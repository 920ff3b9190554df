package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Credentials are what a Guard asks for: basic auth (Username and Secret
// the password) or a bearer token (Secret).
type Credentials struct {
	Bearer   bool
	Username string
	Secret   []byte
}

// Guard asks every request on the metrics listener for credentials. The
// zero Guard lets everything through; Set changes the credentials at once
// (a reload that changes the password file).
type Guard struct {
	creds atomic.Pointer[digests]
	log   *slog.Logger

	mu         sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// digests are compared in constant time, whatever the lengths.
type digests struct {
	bearer     bool
	user, pass [sha256.Size]byte
}

// NewGuard returns a guard that logs refused requests (at most one line in
// ten seconds, with a count).
func NewGuard(log *slog.Logger) *Guard { return &Guard{log: orDefault(log)} }

// Set installs credentials; nil opens the listener.
func (g *Guard) Set(c *Credentials) {
	if c == nil {
		g.creds.Store(nil)
		return
	}
	g.creds.Store(&digests{bearer: c.Bearer, user: sha256.Sum256([]byte(c.Username)), pass: sha256.Sum256(c.Secret)})
}

func (g *Guard) allowed(r *http.Request, d *digests) bool {
	if d.bearer {
		h := r.Header.Get("Authorization")
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
		return subtle.ConstantTimeCompare(sum[:], d.pass[:]) == 1
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(u[:], d.user[:])&subtle.ConstantTimeCompare(p[:], d.pass[:]) == 1
}

// Wrap guards next.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := g.creds.Load()
		if d == nil || g.allowed(r, d) {
			next.ServeHTTP(w, r)
			return
		}
		g.refused(r)
		if d.bearer {
			w.Header().Set("WWW-Authenticate", `Bearer realm="limpet"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Basic realm="limpet", charset="UTF-8"`)
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "401 unauthorized: settings.metrics_auth asks for credentials", http.StatusUnauthorized)
	})
}

func (g *Guard) refused(r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.lastWarn) < 10*time.Second {
		g.suppressed++
		return
	}
	if g.log != nil {
		g.log.Warn("metrics listener: refused a request without valid credentials", "remote", r.RemoteAddr,
			"path", r.URL.Path, "refused_since_last_report", g.suppressed)
	}
	g.lastWarn, g.suppressed = time.Now(), 0
}
