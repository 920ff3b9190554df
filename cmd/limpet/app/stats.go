package app

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
)

// The views of 'limpet stats -o json'. Keys are snake_case and named after
// the Prometheus metrics (without their limpet_<object>_ prefix): a value
// is "packets_total" here and limpet_virtual_server_packets_total there,
// and an object's labels (virtual_server, pool, member, table, ...) are
// its keys. The README documents the schema.

// StatsView is 'limpet stats -o json'.
type StatsView struct {
	VirtualServers []VSStatsView     `json:"virtual_servers"`
	Members        []MemberStatsView `json:"members"`
	Tables         []TableStatsView  `json:"persistence_tables"`
	// DroppedPackets and ExceptionPackets are the datapath's reason
	// counters (limpet_datapath_dropped_packets_total and
	// limpet_datapath_exception_packets_total), by reason.
	DroppedPackets   map[string]uint64 `json:"datapath_dropped_packets_total"`
	ExceptionPackets map[string]uint64 `json:"datapath_exception_packets_total"`
	// RedirectErrors are the redirects the kernel refused
	// (limpet_xdp_redirect_errors_total).
	RedirectErrors []RedirectErrorsView `json:"xdp_redirect_errors"`
}

// VSStatsView is one virtual server's counters (limpet_virtual_server_*).
type VSStatsView struct {
	VirtualServer  string `json:"virtual_server"`
	Address        string `json:"address"`
	Port           int    `json:"port"`
	Protocol       string `json:"protocol"`
	Packets        uint64 `json:"packets_total"`
	Bytes          uint64 `json:"bytes_total"`
	ReplyPackets   uint64 `json:"reply_packets_total"`
	ReplyBytes     uint64 `json:"reply_bytes_total"`
	NewConnections uint64 `json:"new_connections_total"`
	PersistHits    uint64 `json:"persistence_hits_total"`
	PersistMisses  uint64 `json:"persistence_misses_total"`
	PersistMoved   uint64 `json:"persistence_moved_total"`
	PersistRejects uint64 `json:"persistence_rejects_total"`
	// DroppedPackets is limpet_virtual_server_dropped_packets_total, by
	// reason: server_down and no_member.
	DroppedPackets map[string]uint64 `json:"dropped_packets_total"`
}

// MemberStatsView is one member's counters (limpet_member_*).
type MemberStatsView struct {
	Pool              string `json:"pool"`
	Member            string `json:"member"`
	Address           string `json:"address"`
	Port              int    `json:"port"`
	Packets           uint64 `json:"packets_total"`
	Bytes             uint64 `json:"bytes_total"`
	NewConnections    uint64 `json:"new_connections_total"`
	ActiveConnections uint32 `json:"active_connections"`
}

// TableStatsView is one persistence table (limpet_persistence_table_*).
// Evictions and corrections are counted by the daemon's sweeper: see the
// metrics.
type TableStatsView struct {
	Table         uint32 `json:"table"`
	Profile       string `json:"profile"`
	VirtualServer string `json:"virtual_server,omitempty"` // a private table's
	Entries       int    `json:"entries"`
	MaxEntries    int    `json:"max_entries"`
	Inserts       uint64 `json:"inserts_total"`
	Hits          uint64 `json:"hits_total"`
	Misses        uint64 `json:"misses_total"`
	Rejects       uint64 `json:"rejects_total"`
	Expiries      uint64 `json:"expiries_total"`
}

// RedirectErrorsView counts the refused redirects into one interface for
// one error.
type RedirectErrorsView struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	Error     string `json:"error"`
	Hint      string `json:"hint,omitempty"`
	Count     uint64 `json:"xdp_redirect_errors_total"`
}

// reasonAction says what the datapath does with a packet it counts under a
// reason, in the table output.
func reasonAction(i int) string {
	switch {
	case loader.ReasonNames[i] == "table_full":
		return "TCP: RST sent, UDP: dropped"
	case loader.ReasonDrops[i]:
		return "dropped"
	case loader.ReasonPasses[i]:
		return "passed to the kernel"
	}
	return "forwarded, counted"
}

// stats is 'limpet stats': the pinned datapath's counters.
func (env *Env) stats(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	v, err := openView(c)
	if err != nil {
		return err
	}
	defer v.DP.Close()
	out := StatsView{VirtualServers: []VSStatsView{}, Members: []MemberStatsView{}, Tables: []TableStatsView{},
		DroppedPackets: map[string]uint64{}, ExceptionPackets: map[string]uint64{}, RedirectErrors: []RedirectErrorsView{}}
	for _, vs := range v.Meta.VirtualServers {
		cnt, err := v.DP.VSCounters(vs.ID)
		if err != nil {
			return err
		}
		out.VirtualServers = append(out.VirtualServers, VSStatsView{VirtualServer: vs.Name, Address: vs.Address, Port: vs.Port,
			Protocol: vs.Protocol, Packets: cnt.Packets, Bytes: cnt.Bytes, ReplyPackets: cnt.ReplyPackets, ReplyBytes: cnt.ReplyBytes,
			NewConnections: cnt.NewFlows, PersistHits: cnt.PersistHits, PersistMisses: cnt.PersistMisses,
			PersistMoved: cnt.PersistMoved, PersistRejects: cnt.Rejects,
			DroppedPackets: map[string]uint64{"server_down": cnt.ServerDownDrops, "no_member": cnt.NoMemberDrops}})
	}
	conns := map[loader.MemberID]uint32{}
	if mc, err := v.DP.MemberConns(); err == nil {
		for _, m := range mc {
			conns[m.ID] = m.Conns
		}
	}
	for _, m := range v.Meta.Members {
		cnt, err := v.DP.MemberCounters(m.ID)
		if err != nil {
			return err
		}
		out.Members = append(out.Members, MemberStatsView{Pool: m.Pool, Member: m.Name, Address: m.Address, Port: m.Port,
			Packets: cnt.Packets, Bytes: cnt.Bytes, NewConnections: cnt.NewFlows, ActiveConnections: conns[m.ID]})
	}
	for _, t := range v.Meta.Tables {
		cnt, err := v.DP.TableCounters(t.ID)
		if err != nil {
			return err
		}
		es, err := v.DP.TableEntries(t.ID)
		if err != nil {
			return err
		}
		out.Tables = append(out.Tables, TableStatsView{Table: t.ID.Index(), Profile: t.Profile, VirtualServer: t.VirtualServer,
			Entries: len(es), MaxEntries: t.MaxEntries, Inserts: cnt.Inserts, Hits: cnt.Hits, Misses: cnt.Misses,
			Rejects: cnt.Rejects, Expiries: cnt.Expired})
	}
	reasons, err := v.DP.ReasonCounters()
	if err != nil {
		return err
	}
	for i, n := range reasons {
		if loader.ReasonDrops[i] {
			out.DroppedPackets[loader.ReasonNames[i]] = n
		} else {
			out.ExceptionPackets[loader.ReasonNames[i]] = n
		}
	}
	redirects, err := v.DP.RedirectErrors()
	if err != nil {
		return err
	}
	// The targets are named after the interfaces limpet is attached to,
	// from the pinned links: this command may run in another namespace.
	names, _ := v.DP.AttachedIfindexes()
	for _, r := range redirects {
		name, ok := names[r.Ifindex]
		if !ok {
			name = fmt.Sprintf("ifindex %d", r.Ifindex)
		}
		out.RedirectErrors = append(out.RedirectErrors, RedirectErrorsView{Interface: name, Ifindex: r.Ifindex,
			Error: loader.ErrnoName(r.Errno), Hint: loader.RedirectErrorHint(r.Errno), Count: r.Count})
	}
	if format == "json" {
		return writeJSON(env.Stdout, out)
	}
	tw := newTable(env.Stdout)
	fmt.Fprintln(tw, "VIRTUAL SERVER\tADDRESS\tPACKETS\tBYTES\tREPLIES\tNEW CONNS\tPERSIST HITS\tMISSES\tMOVED\tREJECTS\tDOWN DROPS\tNO MEMBER")
	for _, s := range out.VirtualServers {
		fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", s.VirtualServer, endpoint(s.Address, s.Port), s.Protocol,
			s.Packets, s.Bytes, s.ReplyPackets, s.NewConnections, s.PersistHits, s.PersistMisses, s.PersistMoved, s.PersistRejects,
			s.DroppedPackets["server_down"], s.DroppedPackets["no_member"])
	}
	fmt.Fprintln(tw, "\nMEMBER\tPOOL\tADDRESS\tPACKETS\tBYTES\tNEW CONNS\tACTIVE")
	for _, m := range out.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", m.Member, m.Pool, endpoint(m.Address, m.Port), m.Packets, m.Bytes,
			m.NewConnections, m.ActiveConnections)
	}
	fmt.Fprintln(tw, "\nTABLE\tPROFILE\tENTRIES\tMAX\tINSERTS\tHITS\tMISSES\tREJECTS\tEXPIRED")
	for _, t := range out.Tables {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t.Table, t.Profile, t.Entries, t.MaxEntries, t.Inserts, t.Hits,
			t.Misses, t.Rejects, t.Expiries)
	}
	fmt.Fprintln(tw, "\nREASON\tPACKETS\tACTION")
	for i, name := range loader.ReasonNames {
		if reasons[i] == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", name, reasons[i], reasonAction(i))
	}
	if len(out.RedirectErrors) > 0 {
		fmt.Fprintln(tw, "\nREDIRECTED INTO\tERROR\tPACKETS\tMEANING")
		for _, r := range out.RedirectErrors {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Interface, r.Error, r.Count, dash(r.Hint))
		}
	}
	return tw.Flush()
}
