package l7

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/persist"
)

// Cookie states, as the access log reports them.
const (
	cookieNone          = "none"
	cookieValid         = "valid"
	cookieExpired       = "expired"
	cookieTampered      = "tampered"
	cookieUnknownMember = "unknown_member"
	cookieWrongVS       = "wrong_virtual_server"
	// app_cookie: the value is not in the table.
	cookieUnknownValue = "unknown_value"
)

// Key states of generic and source_ip persistence.
const (
	keyNone          = "none"
	keyHit           = "hit"
	keyMiss          = "miss"
	keyUnknownMember = "unknown_member"
)

// Decisions.
const (
	decPersisted  = "persisted"
	decBalanced   = "balanced"
	decRebalanced = "rebalanced"
	decServerDown = "server_down"
	decNoMember   = "no_member"
	decTableFull  = "table_full"
	decRejected   = "rejected"
)

type stateKey struct{}

// reqState follows one request from the handler through the transport and
// back; the access log line is made from it.
type reqState struct {
	vs     *virtualServer
	start  time.Time // wall clock, for the duration
	client netip.AddrPort
	conn   *connState
	ctx    context.Context // the proxied request's context
	cancel context.CancelCauseFunc

	// member is the member the request is counted on (Acquire), if any.
	member   *balance.Member
	acquired bool
	// persisted is the member persistence named, whatever became of it.
	persisted *balance.Member
	tried     []*balance.Member
	decision  string
	reason    string
	retries   int

	cookieState string
	keyState    string
	// http_cookie: the client's valid cookie.
	cookieValue   string
	cookieIssued  time.Time
	cookieOldName string // the valid cookie came under a name derived from an older key
	cookieCount   int
	cookieSet     bool
	// expires is when the persistence ends (http_cookie with a timeout), for Retry-After.
	expires time.Time

	// table persistence
	key      persist.Key
	hasKey   bool
	admitted *balance.Member

	upgrade    string
	retryAfter int

	mu          sync.Mutex
	status      int
	err         string
	upstreamErr error
	clientErr   error
	bodyErr     error
}

func stateOf(ctx context.Context) *reqState {
	rs, _ := ctx.Value(stateKey{}).(*reqState)
	return rs
}

// use makes m the member of the request; the caller has acquired it.
func (rs *reqState) use(m *balance.Member) {
	rs.member = m
	rs.acquired = true
}

// release ends the request's count on its member.
func (rs *reqState) release() {
	if rs.acquired && rs.member != nil {
		rs.member.Release()
	}
	rs.acquired = false
}

func (rs *reqState) setStatus(code int) {
	rs.mu.Lock()
	rs.status = code
	rs.mu.Unlock()
}

func (rs *reqState) setErr(msg string) {
	rs.mu.Lock()
	if rs.err == "" {
		rs.err = msg
	}
	rs.mu.Unlock()
}

func (rs *reqState) errText() string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.err
}

func (rs *reqState) setUpstreamErr(err error) {
	rs.mu.Lock()
	if rs.upstreamErr == nil {
		rs.upstreamErr = err
	}
	rs.mu.Unlock()
}

func (rs *reqState) setClientErr(err error) {
	rs.mu.Lock()
	if rs.clientErr == nil {
		rs.clientErr = err
	}
	rs.mu.Unlock()
}

func (rs *reqState) setBodyErr(err error) {
	rs.mu.Lock()
	if rs.bodyErr == nil {
		rs.bodyErr = err
	}
	rs.mu.Unlock()
}

// errs returns the client write and member read errors seen.
func (rs *reqState) errs() (client, upstream error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.clientErr, rs.upstreamErr
}

func (rs *reqState) getBodyErr() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.bodyErr
}
