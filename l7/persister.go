package l7

import (
	"fmt"
	"net/http"
	"time"

	"github.com/limpet-lb/limpet/l7/balance"
	"github.com/limpet-lb/limpet/l7/spec"
)

// persister is one persistence method on one virtual server.
type persister interface {
	kind() string
	// route reads the request's persistence (cookie, key, address) and
	// sets rs.persisted when it names a member of the pool, with the
	// cookie or key state for the log.
	route(rs *reqState, r *http.Request, now time.Time)
	// admit runs once rs.member is chosen, before proxying; an error
	// (persist.ErrFull) refuses the request.
	admit(rs *reqState, now time.Time) error
	// appendCookies writes the request's Cookie field for the member
	// (from the client's lines) to b.
	appendCookies(b []byte, rs *reqState, lines []string) []byte
	// respond edits the member's response header and learns from it.
	respond(rs *reqState, h http.Header, now time.Time)
}

func newPersister(s *Server, vc *spec.VirtualServer, prof *spec.Profile, pool *balance.Pool) (persister, error) {
	switch prof.Type {
	case spec.ProfileHTTPCookie:
		return newCookiePersister(s, vc, prof, pool)
	case spec.ProfileAppCookie, spec.ProfileGeneric, spec.ProfileSourceIP:
		return newTablePersister(s, vc, prof, pool)
	}
	return nil, fmt.Errorf("profile type %q is not served at L7", prof.Type)
}
