// Package httpserve runs the daemon's own HTTP servers (the admin API, the
// metrics listener) for as long as a context lives. It imports nothing of
// limpet's.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout is how long the requests in flight get to finish once
// the context is done.
const ShutdownTimeout = 5 * time.Second

// Serve serves srv on ln until ctx is done, then shuts srv down, giving the
// requests in flight ShutdownTimeout. It returns nil after ctx is done, or
// what made srv stop serving before.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
