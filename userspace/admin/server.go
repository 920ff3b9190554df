package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/limpet-lb/limpet/userspace/httpserve"
)

// Listen creates the admin socket at path (DefaultSocket if empty): mode
// 0600, owned by root when the daemon runs as root, in a directory created
// 0755 if missing. The socket is bound under a private name and renamed
// into place, so it is never reachable with looser permissions. A stale
// socket left by a crashed daemon is replaced; a live one (another daemon
// answers on it) or a file that is not a socket is an error.
//
// Closing the listener removes the socket, unless another one has replaced
// it since.
func Listen(path string) (net.Listener, error) {
	path = SocketPath(path)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("admin socket: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket: another limpet daemon is listening on %s", path)
		}
	}
	tmpDir, err := os.MkdirTemp(dir, ".limpet-admin-")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(tmp, 0, 0); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &socketListener{UnixListener: ln, path: path, fi: fi}, nil
}

// socketListener removes its socket file on Close.
type socketListener struct {
	*net.UnixListener
	path string
	fi   fs.FileInfo
	once sync.Once
}

// Addr is the socket's final path, not the private name it was bound under.
func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}

// Server serves the admin API.
type Server struct {
	Handler Handler
	// Log gets refused peers and failed requests; nil means slog.Default().
	Log *slog.Logger

	mu sync.Mutex // one Reload or SetMember at a time
}

// Serve creates the socket at socketPath (see Listen) and serves h on it
// until ctx is done; then it removes the socket and returns nil.
func Serve(ctx context.Context, socketPath string, h Handler) error {
	ln, err := Listen(socketPath)
	if err != nil {
		return err
	}
	return (&Server{Handler: h}).Serve(ctx, ln)
}

type credKey struct{}

// peerCred reads the credentials of the process at the other end of c.
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a unix socket connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, serr
}

// Serve serves the API on ln until ctx is done, then closes ln (which
// removes a socket made by Listen) and returns nil. Peers that are not
// root (SO_PEERCRED uid 0) get 403 whatever they ask.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	srv := &http.Server{
		Handler:           s.rootOnly(log, s.routes(log)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cred, err := peerCred(c)
			if err != nil {
				log.Warn("admin API: cannot read peer credentials", "error", err)
				return ctx
			}
			return context.WithValue(ctx, credKey{}, cred)
		},
	}
	err := httpserve.Serve(ctx, srv, ln)
	ln.Close()
	return err
}

// rootOnly refuses every request of a peer that is not root.
func (s *Server) rootOnly(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, _ := r.Context().Value(credKey{}).(*unix.Ucred)
		if cred == nil || cred.Uid != 0 {
			msg := "the limpet admin API is for root only"
			if cred != nil {
				msg = fmt.Sprintf("%s; refused uid %d (pid %d)", msg, cred.Uid, cred.Pid)
				log.Warn("admin API: refused a peer that is not root", "uid", cred.Uid, "pid", cred.Pid)
			}
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusForbidden, errorBody{Error: msg, Kind: kindForbidden})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// NewHandler returns the API's routes without the root check, for tests
// and for embedding behind another transport.
func NewHandler(h Handler, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return (&Server{Handler: h}).routes(log)
}

func (s *Server) routes(log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st := s.Handler.Status()
		if !st.StartedAt.IsZero() {
			st.UptimeSeconds = time.Since(st.StartedAt).Seconds()
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		sum, err := s.Handler.Reload()
		s.mu.Unlock()
		if err != nil {
			writeError(w, log, "reload", err)
			return
		}
		writeJSON(w, http.StatusOK, sum)
	})
	mux.HandleFunc("POST /v1/members/{pool}/{member}/{action}", func(w http.ResponseWriter, r *http.Request) {
		pool, member, action := r.PathValue("pool"), r.PathValue("member"), r.PathValue("action")
		var enabled bool
		switch action {
		case "enable":
			enabled = true
		case "disable":
		default:
			writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("no action %q: use enable or disable", action), Kind: kindNotFound})
			return
		}
		s.mu.Lock()
		err := s.Handler.SetMember(pool, member, enabled)
		s.mu.Unlock()
		if err != nil {
			writeError(w, log, "member "+action, err)
			return
		}
		writeJSON(w, http.StatusOK, MemberChange{Pool: pool, Member: member, Enabled: enabled})
	})
	mux.HandleFunc("POST /v1/drain/{action}", func(w http.ResponseWriter, r *http.Request) {
		dr, ok := s.Handler.(Drainer)
		if !ok {
			writeJSON(w, http.StatusNotFound, errorBody{Error: "this daemon cannot drain", Kind: kindNotFound})
			return
		}
		var on bool
		switch r.PathValue("action") {
		case "start":
			on = true
		case "cancel":
		default:
			writeJSON(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("no action %q: use start or cancel", r.PathValue("action")), Kind: kindNotFound})
			return
		}
		s.mu.Lock()
		err := dr.Drain(on)
		s.mu.Unlock()
		if err != nil {
			writeError(w, log, "drain", err)
			return
		}
		writeJSON(w, http.StatusOK, DrainChange{Draining: on})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers a handler's error with the status its kind calls for.
func writeError(w http.ResponseWriter, log *slog.Logger, what string, err error) {
	var ce *ConfigError
	var fe interface{ ConfigField() string }
	code, kind := http.StatusInternalServerError, kindInternal
	switch {
	case errors.As(err, &ce), errors.As(err, &fe):
		code, kind = http.StatusBadRequest, kindConfig
	case errors.Is(err, ErrNotFound):
		code, kind = http.StatusNotFound, kindNotFound
	case errors.Is(err, ErrInvalid):
		code, kind = http.StatusBadRequest, kindInvalid
	case errors.Is(err, ErrForbidden):
		code, kind = http.StatusForbidden, kindForbidden
	}
	if code == http.StatusInternalServerError {
		log.Error("admin API: "+what+" failed", "error", err)
	}
	writeJSON(w, code, errorBody{Error: err.Error(), Kind: kind})
}
