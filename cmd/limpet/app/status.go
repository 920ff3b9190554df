package app

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/userspace/admin"
)

// adminTimeout bounds one admin API call.
const adminTimeout = 2 * time.Minute

// dialAdmin connects to the daemon named by --socket, or else to the one
// of --pin-path: the daemon records its socket in the pinned metadata. No
// daemon is a runtime failure (exit 1).
func dialAdmin(c *cli.Context) (*admin.Client, error) {
	return admin.Dial(adminSocketOf(c))
}

func adminSocketOf(c *cli.Context) string {
	if s := c.String("socket"); s != "" {
		return s
	}
	pinPath := c.String("pin-path")
	if v, err := openView(c); err == nil {
		v.DP.Close()
		if v.Meta.AdminSocket != "" {
			return v.Meta.AdminSocket
		}
	}
	// Nothing pinned (or written by a daemon that did not record its
	// socket): where a daemon of this pin path listens by default.
	return admin.SocketFor("", pinPath)
}

func adminContext(env *Env) (context.Context, context.CancelFunc) {
	ctx := env.Context
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, adminTimeout)
}

// callAdmin runs call on the running daemon's admin API, within adminTimeout.
func callAdmin(env *Env, c *cli.Context, call func(context.Context, *admin.Client) error) error {
	cl, err := dialAdmin(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := adminContext(env)
	defer cancel()
	return call(ctx, cl)
}

// status is 'limpet status': the running daemon's view.
func (env *Env) status(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	var st admin.Status
	if err := callAdmin(env, c, func(ctx context.Context, cl *admin.Client) (err error) {
		st, err = cl.Status(ctx)
		return err
	}); err != nil {
		return err
	}
	if format == "json" {
		return writeJSON(env.Stdout, st)
	}
	return printStatus(env, st)
}

func printStatus(env *Env, st admin.Status) error {
	w := env.Stdout
	fmt.Fprintf(w, "limpet %s, pid %d, up %s\n", st.Version, st.PID, time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second))
	fmt.Fprintf(w, "config %s, applied %s\n", st.ConfigPath, st.AppliedAt.UTC().Format(time.RFC3339))
	if st.LastReloadError != "" {
		fmt.Fprintf(w, "last reload refused (the config above keeps running): %s\n", st.LastReloadError)
	}
	var ifs []string
	for _, i := range st.Interfaces {
		ifs = append(ifs, fmt.Sprintf("%s (%s)", i.Name, i.XDPMode))
	}
	if len(ifs) == 0 {
		ifs = []string{"none"}
	}
	fmt.Fprintf(w, "interfaces: %s\n", strings.Join(ifs, ", "))
	if st.MetricsListen != "" {
		fmt.Fprintf(w, "metrics: http://%s/metrics\n", st.MetricsListen)
	}
	for _, wa := range st.Warnings {
		fmt.Fprintf(w, "warning: %s: %s\n", wa.Interface, wa.Message)
		if wa.Fix != "" {
			fmt.Fprintf(w, "  fix: %s\n", wa.Fix)
		}
	}
	for _, r := range st.RedirectErrors {
		fmt.Fprintf(w, "redirect failures: %s into %s (%s)\n", plural(int(r.Count), "packet"), r.Interface, r.Error)
		if r.Hint != "" {
			fmt.Fprintf(w, "  %s\n", r.Hint)
		}
	}

	inService := map[string][2]int{}
	for _, p := range st.Pools {
		n := 0
		for i := range p.Members {
			if p.Members[i].InService() {
				n++
			}
		}
		inService[p.Name] = [2]int{n, len(p.Members)}
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "\nVIRTUAL SERVER\tTYPE\tADDRESS\tPROTOCOL\tFORWARDING\tPOOL\tPROFILE\tIN SERVICE")
	for _, v := range st.VirtualServers {
		n := inService[v.Pool]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", v.Name, v.Type, safeEndpoint(v.Address, v.Port), v.Protocol,
			dash(v.Forwarding), v.Pool, dash(v.Profile), n[0], n[1])
	}
	fmt.Fprintln(tw, "\nPOOL\tALGORITHM\tMEMBER\tADDRESS\tWEIGHT\tSTATE\tHEALTH\tCONNECTIONS")
	for _, p := range st.Pools {
		for _, m := range p.Members {
			state := m.State
			if m.AdminDown {
				state = "disabled (limpet member disable)"
			}
			health := m.Health
			if m.HealthDetail != "" && m.Health == admin.HealthDown {
				health += ": " + m.HealthDetail
			}
			conns := strconv.FormatUint(m.ActiveConnections, 10)
			if m.MaxConnections > 0 {
				conns += "/" + strconv.Itoa(m.MaxConnections)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, p.Algorithm, m.Name, safeEndpoint(m.Address, m.Port),
				m.Weight, state, dash(health), conns)
		}
	}
	printNextHops(tw, st)
	if len(st.Tables) > 0 {
		fmt.Fprintln(tw, "\nTABLE\tPROFILE\tVIRTUAL SERVER\tENTRIES\tMAX\tFILL\tWHEN FULL\tTIMEOUT")
		for _, t := range st.Tables {
			vs := t.VirtualServer
			if t.Shared {
				vs = "(shared)"
			}
			fill := "-"
			if t.MaxEntries > 0 {
				fill = fmt.Sprintf("%.1f%%", 100*float64(t.Entries)/float64(t.MaxEntries))
			}
			full := "purge"
			if !t.PurgeWhenFull {
				full = "reject"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", t.ID, t.Profile, dash(vs), t.Entries, t.MaxEntries, fill, full,
				time.Duration(t.Timeout)*time.Second)
		}
	}
	if cl := st.Cluster; cl != nil {
		sync := "finished " + cl.SyncedAt.UTC().Format(time.RFC3339)
		if !cl.Synced {
			sync = "not finished"
		}
		mode := cl.Mode
		if mode == "" {
			mode = "no mirroring"
		}
		fmt.Fprintf(tw, "\nCLUSTER: %s, %d of %d peers up, initial HA sync %s (%s), max lag %.1fs\n", mode, cl.PeersUp, cl.Peers, sync, dash(cl.SyncDetail), cl.MaxLagSeconds)
	}
	if len(st.Mirroring) > 0 {
		fmt.Fprintln(tw, "\nHA PEER\tSTATE\tSINCE\tSENT\tRECEIVED\tDROPPED\tQUEUED\tLAG\tLAST SYNC\tLAST ERROR")
		for _, p := range st.Mirroring {
			last := "-"
			if !p.LastSync.IsZero() {
				last = p.LastSync.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.1fs\t%s\t%s\n", p.Address, p.State, p.Since.Format(time.RFC3339),
				p.Sent, p.Received, p.Dropped, p.QueueLen, p.LagSeconds, last, dash(p.LastError))
		}
	}
	if b := st.BGP; b != nil {
		drain := ""
		if b.Draining {
			drain = ", DRAINING (limpet drain --cancel to end it)"
		}
		fmt.Fprintf(tw, "\nBGP: AS %d, router id %s, damping interval %gs%s\n", b.ASN, b.RouterID, b.DampingSeconds, drain)
		fmt.Fprintln(tw, "BGP NEIGHBOR\tPEER AS\tSTATE\tUPTIME\tPREFIXES SENT\tRECEIVED\tFLAPS\tLAST ERROR")
		for _, s := range b.Sessions {
			up := "-"
			if s.Established() {
				up = (time.Duration(s.UptimeSeconds) * time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", s.Neighbor, s.PeerASN, s.State, up, s.PrefixesSent, s.PrefixesReceived, s.Flaps, dash(s.LastError))
		}
		fmt.Fprintln(tw, "VIP\tANNOUNCED\tREASON\tSINCE\tVIRTUAL SERVERS\tDETAIL")
		for _, a := range b.Announcements {
			yes := "no"
			if a.Announced {
				yes = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Prefix, yes, a.Reason, a.Since.UTC().Format(time.RFC3339), strings.Join(a.VirtualServers, ","), dash(a.Detail))
		}
	}
	return tw.Flush()
}

// printNextHops shows the next-hop cache: its generation and lease, then
// each member's hop (MAC pair, interface, MTU) and lookup counters.
func printNextHops(tw io.Writer, st admin.Status) {
	c := st.NextHopCache
	if c == nil {
		return
	}
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	}
	live := "not live: every packet asks the FIB"
	if c.Live {
		live = fmt.Sprintf("live, lease %.1fs left", c.LeaseExpiresInSeconds)
	}
	fmt.Fprintf(tw, "\nNEXT-HOP CACHE: generation %d, %s; %d members cached, %d unresolved; last published %s, last resolved %s; %d hits, %d misses, %d MTU fallbacks\n",
		c.Generation, live, c.MembersCached, c.MembersUnresolved, stamp(c.LastPublished), stamp(c.LastResolved), c.Hits, c.Misses, c.MTUFallbacks)
	fmt.Fprintln(tw, "POOL\tMEMBER\tNEXT HOP\tINTERFACE\tDST MAC\tSRC MAC\tMTU\tGENERATION\tHITS\tMISSES\tMTU FALLBACKS")
	for _, p := range st.Pools {
		for _, m := range p.Members {
			h := m.NextHop
			if h == nil {
				continue
			}
			state, ifc, mtu, gen := h.State, "-", "-", "-"
			if h.Reason != "" {
				state += ": " + h.Reason
			}
			if h.State == admin.NextHopCached {
				ifc = fmt.Sprintf("%s (%d)", dash(h.Interface), h.Ifindex)
				mtu, gen = strconv.Itoa(h.MTU), strconv.FormatUint(uint64(h.Generation), 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", p.Name, m.Name, state, ifc,
				dash(h.DstMAC), dash(h.SrcMAC), mtu, gen, h.Hits, h.Misses, h.MTUFallbacks)
		}
	}
}
