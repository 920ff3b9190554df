package app

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/desired"
)

// tagFilter matches NSX-style scope/tag pairs.
type tagFilter struct{ scope, tag string }

func parseTagFilter(s string) (tagFilter, error) {
	if s == "" || s == "=" {
		return tagFilter{}, usagef("--tag %q: give SCOPE=TAG, SCOPE= or TAG", s)
	}
	scope, tag, found := strings.Cut(s, "=")
	if !found {
		return tagFilter{tag: s}, nil
	}
	return tagFilter{scope: scope, tag: tag}, nil
}

func (f tagFilter) match(t *desired.TableMeta) bool {
	for _, tg := range t.Tags {
		if (f.scope == "" || tg.Scope == f.scope) && (f.tag == "" || tg.Tag == f.tag) {
			return true
		}
	}
	return false
}

func openView(c *cli.Context) (*desired.View, error) { return desired.OpenView(c.String("pin-path")) }

// openEditor opens the datapath pinned at --pin-path for an operator's edits.
func openEditor(c *cli.Context) (*loader.Editor, *desired.View, error) {
	return desired.OpenEditor(c.String("pin-path"))
}

// selectTables applies --vs and --profile, and fails on names that do not exist.
func selectTables(v *desired.View, vs, profile string, tags []tagFilter) ([]desired.TableMeta, error) {
	if vs != "" && v.Meta.VirtualServerByName(vs) == nil {
		return nil, usagef("--vs %q: no such l4 virtual server in the running config", vs)
	}
	if profile != "" {
		found := false
		for _, t := range v.Meta.Tables {
			found = found || t.Profile == profile
		}
		if !found {
			return nil, usagef("--profile %q: no table uses that profile", profile)
		}
	}
	var out []desired.TableMeta
	for _, t := range v.Meta.Tables {
		if profile != "" && t.Profile != profile {
			continue
		}
		if vs != "" {
			uses := false
			for _, id := range v.Meta.TablesOf(vs) {
				uses = uses || id == t.ID
			}
			if !uses {
				continue
			}
		}
		ok := true
		for _, f := range tags {
			ok = ok && f.match(&t)
		}
		if ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// DumpView is 'persistence dump -o json'.
type DumpView struct {
	Count   int         `json:"count"`
	Entries []EntryView `json:"entries"`
}

// EntryView is one row of 'persistence dump -o json'.
type EntryView struct {
	VirtualServer   string   `json:"virtual_server"`
	Profile         string   `json:"profile"`
	Table           uint32   `json:"table"`
	Client          string   `json:"client"`
	Server          string   `json:"server"`
	Member          string   `json:"member,omitempty"`
	Connections     uint32   `json:"connections"`
	AgeSeconds      float64  `json:"age_seconds"`
	ExpiresInSecond *float64 `json:"expires_in_seconds"` // null while held by connections
	State           string   `json:"state"`              // held, counting down, expired
	Tags            []string `json:"tags,omitempty"`
}

func clientLabel(e loader.PersistEntry, t *desired.TableMeta) string {
	bits := t.IPv6Prefix
	if e.Client.Is4() {
		bits = t.IPv4Prefix
	}
	if bits < e.Client.BitLen() {
		return netip.PrefixFrom(e.Client, bits).String()
	}
	return e.Client.String()
}

func entryView(v *desired.View, e loader.PersistEntry, t *desired.TableMeta, now time.Duration) EntryView {
	ev := EntryView{Profile: t.Profile, Table: t.ID.Index(), Client: clientLabel(e, t),
		Connections: e.Conns, AgeSeconds: loader.Age(e.Created, now).Seconds()}
	ev.VirtualServer = v.VirtualServerName(e.VSID)
	ev.Server = desired.EntryServer(e)
	if mm := v.EntryMember(e); mm != nil {
		ev.Member = mm.Name
	}
	for _, tg := range t.Tags {
		ev.Tags = append(ev.Tags, tg.Scope+"="+tg.Tag)
	}
	state, left := t.EntryState(e, now)
	ev.State = state
	if left != nil {
		sec := left.Seconds()
		ev.ExpiresInSecond = &sec
	}
	return ev
}

func (env *Env) persistenceDump(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	var clientNet netip.Prefix
	if s := c.String("client"); s != "" {
		if clientNet, err = parsePrefixOrAddr(s); err != nil {
			return usagef("--client %q: %v", s, err)
		}
	}
	var tags []tagFilter
	for _, s := range c.StringSlice("tag") {
		f, err := parseTagFilter(s)
		if err != nil {
			return err
		}
		tags = append(tags, f)
	}
	v, err := openView(c)
	if err != nil {
		return err
	}
	defer v.DP.Close()
	tables, err := selectTables(v, c.String("vs"), c.String("profile"), tags)
	if err != nil {
		return err
	}
	now, err := v.DP.Now()
	if err != nil {
		return err
	}
	rows := []EntryView{}
	for i := range tables {
		t := &tables[i]
		entries, err := v.DP.TableEntries(t.ID)
		if err != nil {
			return err
		}
		for _, e := range entries {
			// An entry stands for its client's whole masked prefix.
			if clientNet.IsValid() && !clientNet.Overlaps(netip.PrefixFrom(e.Client, prefixBits(t, e.Client))) {
				continue
			}
			rows = append(rows, entryView(v, e, t, now))
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Table != rows[j].Table {
			return rows[i].Table < rows[j].Table
		}
		return rows[i].Client < rows[j].Client
	})
	out := bufio.NewWriterSize(env.Stdout, 1<<16)
	defer out.Flush()
	if format == "json" {
		return writeJSON(out, DumpView{Count: len(rows), Entries: rows})
	}
	tw := newTable(out)
	fmt.Fprintln(tw, "VIRTUAL SERVER\tPROFILE\tTABLE\tCLIENT\tSERVER\tMEMBER\tCONNS\tAGE\tEXPIRES")
	for _, r := range rows {
		exp := "held by " + plural(int(r.Connections), "connection")
		if r.ExpiresInSecond != nil {
			exp = "in " + shortDuration(*r.ExpiresInSecond)
			if r.State == "expired" {
				exp = "expired, awaiting sweep"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", dash(r.VirtualServer), r.Profile, r.Table, r.Client,
			r.Server, dash(r.Member), r.Connections, shortDuration(r.AgeSeconds), exp)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s\n", plural(len(rows), "entry"))
	return out.Flush()
}

func prefixBits(t *desired.TableMeta, a netip.Addr) int {
	if a.Is4() {
		return t.IPv4Prefix
	}
	return t.IPv6Prefix
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, errors.New("not an address or CIDR")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("not an address or CIDR")
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (env *Env) persistenceDelete(c *cli.Context) error {
	if c.String("client") == "" {
		return usagef("persistence delete needs --client IP")
	}
	client, err := netip.ParseAddr(c.String("client"))
	if err != nil {
		return usagef("--client %q is not an IP address", c.String("client"))
	}
	client = client.Unmap()
	ed, v, err := openEditor(c)
	if err != nil {
		return err
	}
	defer ed.Close()
	tables, err := selectTables(v, c.String("vs"), "", nil)
	if err != nil {
		return err
	}
	deleted := 0
	for _, t := range tables {
		key := t.ClientKey(client)
		if err := ed.DeleteEntry(t.ID, key); err == nil {
			deleted++
			fmt.Fprintf(env.Stdout, "deleted %s from table %d (profile %s)\n", key, t.ID.Index(), t.Profile)
		}
	}
	if deleted == 0 {
		return fmt.Errorf("no persistence entry for %s", client)
	}
	return nil
}

func (env *Env) persistenceFlush(c *cli.Context) error {
	ed, v, err := openEditor(c)
	if err != nil {
		return err
	}
	defer ed.Close()
	tables, err := selectTables(v, c.String("vs"), c.String("profile"), nil)
	if err != nil {
		return err
	}
	total := 0
	for _, t := range tables {
		n, err := ed.FlushTable(t.ID)
		if err != nil {
			return err
		}
		total += n
	}
	fmt.Fprintf(env.Stdout, "flushed %s from %s\n", plural(total, "entry"), plural(len(tables), "table"))
	return nil
}
