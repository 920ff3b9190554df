package lab

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// HandleSignals closes l when the process gets SIGINT, SIGTERM or SIGHUP,
// then re-raises the signal with its default action, so that Ctrl-C in a
// demo never leaves a lab behind. It stops watching when ctx is done or stop
// is called (call stop before a normal Close).
//
// Typical demo use:
//
//	l, err := lab.New(ctx, spec)
//	if err != nil { ... }
//	stop := lab.HandleSignals(ctx, l)
//	defer func() { stop(); l.Close() }()
func HandleSignals(ctx context.Context, l *Lab) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			_ = l.Close()
			signal.Reset(sig)
			if s, ok := sig.(syscall.Signal); ok {
				_ = syscall.Kill(os.Getpid(), s)
			}
			time.Sleep(time.Second)
			os.Exit(1)
		case <-ctx.Done():
		case <-done:
		}
		signal.Stop(ch)
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}
