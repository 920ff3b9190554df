package app

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
)

// StatsView is 'limpet stats -o json'.
type StatsView struct {
	VirtualServers []VSStatsView     `json:"virtual_servers"`
	Members        []MemberStatsView `json:"members"`
	Tables         []TableStatsView  `json:"tables"`
	Drops          map[string]uint64 `json:"drops"`
	Exceptions     map[string]uint64 `json:"exceptions"` // passed or counted, not dropped
}

// VSStatsView is one virtual server's counters.
type VSStatsView struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	loader.VSCounters
}

// MemberStatsView is one member's counters.
type MemberStatsView struct {
	Pool    string `json:"pool"`
	Name    string `json:"name"`
	Address string `json:"address"`
	loader.MemberCounters
}

// TableStatsView is one persistence table's occupancy and counters.
type TableStatsView struct {
	Table      uint32 `json:"table"`
	Profile    string `json:"profile"`
	Entries    int    `json:"entries"`
	MaxEntries int    `json:"max_entries"`
	loader.TableCounters
}

func statsCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:   "stats",
		Usage:  "show datapath counters (no daemon needed)",
		Flags:  []cli.Flag{outputFlag},
		Action: func(c *cli.Context) error { return stats(env, c) },
	}
}

func stats(env *Env, c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	v, err := openView(c)
	if err != nil {
		return err
	}
	defer v.dp.Close()
	out := StatsView{Drops: map[string]uint64{}, Exceptions: map[string]uint64{}}
	for _, vs := range v.meta.VirtualServers {
		cnt, err := v.dp.VSCounters(vs.ID)
		if err != nil {
			return err
		}
		out.VirtualServers = append(out.VirtualServers, VSStatsView{Name: vs.Name, Address: fmt.Sprintf("%s:%d/%s", vs.Address, vs.Port, vs.Protocol), VSCounters: cnt})
	}
	for _, m := range v.meta.Members {
		cnt, err := v.dp.MemberCounters(m.ID)
		if err != nil {
			return err
		}
		out.Members = append(out.Members, MemberStatsView{Pool: m.Pool, Name: m.Name, Address: m.Address, MemberCounters: cnt})
	}
	for _, t := range v.meta.Tables {
		cnt, err := v.dp.TableCounters(t.ID)
		if err != nil {
			return err
		}
		es, err := v.dp.TableEntries(t.ID)
		if err != nil {
			return err
		}
		out.Tables = append(out.Tables, TableStatsView{Table: loader.TableIndex(t.ID), Profile: t.Profile, Entries: len(es), MaxEntries: t.MaxEntries, TableCounters: cnt})
	}
	reasons, err := v.dp.ReasonCounters()
	if err != nil {
		return err
	}
	for i, n := range reasons {
		if loader.ReasonDrops[i] {
			out.Drops[loader.ReasonNames[i]] = n
		} else {
			out.Exceptions[loader.ReasonNames[i]] = n
		}
	}
	if format == "json" {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VIRTUAL SERVER\tADDRESS\tPACKETS\tBYTES\tREPLIES\tNEW FLOWS\tPERSIST HITS\tMISSES\tMOVED\tREJECTS\tDOWN DROPS\tNO MEMBER")
	for _, s := range out.VirtualServers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", s.Name, s.Address, s.Packets, s.Bytes, s.ReplyPackets,
			s.NewFlows, s.PersistHits, s.PersistMisses, s.PersistMoved, s.Rejects, s.ServerDownDrops, s.NoMemberDrops)
	}
	fmt.Fprintln(tw, "\nMEMBER\tPOOL\tADDRESS\tPACKETS\tBYTES\tNEW FLOWS")
	for _, m := range out.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", m.Name, m.Pool, m.Address, m.Packets, m.Bytes, m.NewFlows)
	}
	fmt.Fprintln(tw, "\nTABLE\tPROFILE\tENTRIES\tMAX\tINSERTS\tHITS\tMISSES\tREJECTS\tEXPIRED")
	for _, t := range out.Tables {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", t.Table, t.Profile, t.Entries, t.MaxEntries, t.Inserts, t.Hits, t.Misses, t.Rejects, t.Expired)
	}
	fmt.Fprintln(tw, "\nREASON\tPACKETS\tACTION")
	for i, name := range loader.ReasonNames {
		if reasons[i] == 0 {
			continue
		}
		action := "pass/count"
		if loader.ReasonDrops[i] {
			action = "drop"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", name, reasons[i], action)
	}
	return tw.Flush()
}
