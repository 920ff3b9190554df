package l7

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/cookie"
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

// reqState follows one request from the handler to the member and back;
// the access log line is made from it. It is pooled (reqStates): nothing
// may keep it once the handler has returned.
type reqState struct {
	vs     *virtualServer
	start  time.Time // wall clock, for the duration
	client netip.AddrPort
	conn   *connState

	// member is the member the request is counted on (Acquire), if any.
	member   *balance.Member
	acquired bool
	// persisted is the member persistence named, whatever became of it.
	persisted *balance.Member
	tried     []*balance.Member
	pick      balance.Pick
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

	// The exchange with the member.
	head     []byte // the request head as sent
	upType   string // the protocol the client asked to switch to
	body     replayBody
	bodyDone chan error    // the request body's writer reports here
	bodyConn *upstreamConn // where it writes
	// inflight is where the connection in use is published, so that a
	// client that goes away aborts it: the client connection's slot for
	// HTTP/1, one of the request's own for HTTP/2.
	inflight *atomic.Pointer[upstreamConn]
	// closeAfter: the client connection closes after this response.
	closeAfter bool
	// abort: the response was cut short; the client connection is reset
	// so that a truncated body cannot pass for a whole one.
	abort bool

	respHead []byte     // the member's response head as read
	lbody    lengthBody // its body, when its length is known

	rw      responseWriter
	scratch cookie.Scratch // sealing and opening cookies
	line    []byte         // a Set-Cookie being built

	mu          sync.Mutex
	status      int
	err         string
	upstreamErr error
	clientErr   error
	bodyErr     error
}

var reqStates = sync.Pool{New: func() any { return &reqState{head: make([]byte, 0, 512)} }}

// newReqState returns a clean state from the pool.
func newReqState() *reqState { return reqStates.Get().(*reqState) }

// free resets rs and returns it to the pool.
func (rs *reqState) free() {
	head, line, tried, resp := rs.head[:0], rs.line[:0], rs.tried[:0], rs.respHead[:0]
	if cap(head) > 64<<10 {
		head = make([]byte, 0, 512) // do not pin a huge head
	}
	if cap(resp) > 64<<10 {
		resp = nil
	}
	clear(tried[:cap(tried)])
	*rs = reqState{head: head, line: line, tried: tried, respHead: resp}
	reqStates.Put(rs)
}

// watch publishes uc as the connection a client disconnect aborts.
func (rs *reqState) watch(uc *upstreamConn) {
	if rs.inflight != nil {
		rs.inflight.Store(uc)
	}
}

// unwatch withdraws uc; false means a disconnect took and aborted it.
func (rs *reqState) unwatch(uc *upstreamConn) bool {
	if rs.inflight == nil {
		return !uc.aborted.Load()
	}
	return rs.inflight.CompareAndSwap(uc, nil) && !uc.aborted.Load()
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
