package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/limpet-lb/limpet/userspace/httpserve"
)

// ExampleListen is the address the docs suggest for settings.metrics_listen;
// the endpoint is off unless that setting is given.
const ExampleListen = "127.0.0.1:9469"

// Path is where the endpoint serves the metrics.
const Path = "/metrics"

// NewRegistry returns a registry holding the limpet collector over src and
// the standard Go runtime and process collectors.
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// errorLog adapts slog to promhttp's logger.
type errorLog struct{ log *slog.Logger }

func (l errorLog) Println(v ...any) { l.log.Warn("metrics scrape", "error", fmt.Sprint(v...)) }

// Handler serves src's metrics in the Prometheus exposition formats. A
// section of the source that fails to read is left out of that scrape and
// logged; the rest is served.
func Handler(src Source, log *slog.Logger) http.Handler {
	log = orDefault(log)
	reg := NewRegistry(src)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            errorLog{log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
		Registry:            reg, // promhttp_metric_handler_* about the endpoint itself
	})
}

// Listen opens the metrics listener, so a bad or busy address fails the
// daemon's start (or its reload) rather than a goroutine later.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("settings.metrics_listen: %w", err)
	}
	return ln, nil
}

// Options add to what Serve serves.
type Options struct {
	// Page is served at / and below (the status page); nil serves a link
	// to /metrics at /.
	Page http.Handler
	// Guard asks every path for credentials; nil leaves them open.
	Guard *Guard
}

// Serve serves src's metrics at /metrics on ln until ctx is done, then
// closes ln. It returns nil after ctx is done.
func Serve(ctx context.Context, ln net.Listener, src Source, log *slog.Logger, opts Options) error {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, Handler(src, log))
	if opts.Page != nil {
		mux.Handle("/", opts.Page)
	} else {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, "<html><head><title>limpet</title></head><body><h1>limpet</h1><p><a href=%q>Metrics</a></p></body></html>\n", Path)
		})
	}
	var h http.Handler = mux
	if opts.Guard != nil {
		h = opts.Guard.Wrap(mux)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(orDefault(log).Handler(), slog.LevelWarn),
	}
	return httpserve.Serve(ctx, srv, ln)
}

func orDefault(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.Default()
	}
	return log
}
