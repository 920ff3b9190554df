package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// NoDaemonError says that nothing listens on the admin socket: no daemon
// runs, or it runs with another settings.admin_socket.
type NoDaemonError struct {
	Path string
	Err  error
}

func (e *NoDaemonError) Error() string {
	return fmt.Sprintf("no limpet daemon is listening on %s", e.Path)
}
func (e *NoDaemonError) Unwrap() error { return e.Err }

// APIError is an error the daemon answered with.
type APIError struct {
	StatusCode int
	Kind       string
	Message    string
}

func (e *APIError) Error() string { return e.Message }

// Is matches ErrNotFound, ErrInvalid and ErrForbidden by the answer's kind.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Kind == kindNotFound || (e.Kind == "" && e.StatusCode == http.StatusNotFound)
	case ErrInvalid:
		return e.Kind == kindInvalid
	case ErrForbidden:
		return e.Kind == kindForbidden || e.StatusCode == http.StatusForbidden
	}
	return false
}

// Client talks to a daemon's admin API.
type Client struct {
	path string
	hc   *http.Client
}

// Dial connects to the admin socket at socketPath (DefaultSocket if empty)
// once, to report at once when no daemon listens (a *NoDaemonError) or the
// socket may not be used; the client then connects for each request.
func Dial(socketPath string) (*Client, error) {
	path := SocketPath(socketPath)
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, dialError(path, err)
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}, nil
}

// Path is the socket the client uses.
func (c *Client) Path() string { return c.path }

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
		return &NoDaemonError{Path: path, Err: err}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("cannot use the limpet admin socket %s: permission denied (the admin API is for root only)", path)
	}
	return fmt.Errorf("connect to the limpet daemon on %s: %w", path, err)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &st)
	return st, err
}

// Reload makes the daemon read and apply its config file again. A refused
// config comes back as a *ConfigError holding the daemon's message, which
// names the field; the old config keeps running.
func (c *Client) Reload(ctx context.Context) (Summary, error) {
	var s Summary
	err := c.do(ctx, http.MethodPost, "/v1/reload", &s)
	var ae *APIError
	if errors.As(err, &ae) && ae.Kind == kindConfig {
		return s, &ConfigError{Err: errors.New(ae.Message)}
	}
	return s, err
}

// SetMember enables or disables a pool member (by name, address or
// address:port). An unknown pool or member is an error matching ErrNotFound.
func (c *Client) SetMember(ctx context.Context, pool, member string, enabled bool) error {
	action := "disable"
	if enabled {
		action = "enable"
	}
	if pool == "" || member == "" {
		return fmt.Errorf("member %s needs a pool and a member: %w", action, ErrInvalid)
	}
	var ch MemberChange
	return c.do(ctx, http.MethodPost, "/v1/members/"+url.PathEscape(pool)+"/"+url.PathEscape(member)+"/"+action, &ch)
}

// Drain withdraws the node's VIPs from BGP (on) or lets them be announced
// again (off).
func (c *Client) Drain(ctx context.Context, on bool) error {
	action := "cancel"
	if on {
		action = "start"
	}
	var out DrainChange
	return c.do(ctx, http.MethodPost, "/v1/drain/"+action, &out)
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://limpet"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("limpet daemon on %s: %w", c.path, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return dialError(c.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("limpet daemon on %s: %w", c.path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(body, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(body))
			if eb.Error == "" {
				eb.Error = resp.Status
			}
		}
		return &APIError{StatusCode: resp.StatusCode, Kind: eb.Kind, Message: eb.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("limpet daemon on %s: bad answer to %s %s: %w", c.path, method, path, err)
	}
	return nil
}
