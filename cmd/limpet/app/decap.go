package app

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/loader"
)

// DecapView is one interface of 'limpet member-decap --status -o json'.
type DecapView struct {
	Iface     string                `json:"iface"`
	Ifindex   int                   `json:"ifindex"`
	Gone      bool                  `json:"interface_gone"`
	GUEPort   uint16                `json:"gue_port"`
	OnlyTo    []string              `json:"only_to"`
	ProgramID uint32                `json:"program_id"`
	Counters  map[string]DecapCount `json:"counters"`
}

// DecapCount is one counter of a DecapView.
type DecapCount struct {
	Packets uint64 `json:"packets_total"`
	Bytes   uint64 `json:"bytes_total"`
}

// DecapStatusView is 'limpet member-decap --status -o json'.
type DecapStatusView struct {
	PinPath    string      `json:"pin_path"`
	Interfaces []DecapView `json:"interfaces"`
}

const memberDecapDescription = "Attach:  limpet member-decap --iface eth0 [--gue-port 6080] [--only-to ADDR]...  (again: updates the program, the port and the addresses, keeps the counters)\n" +
	"Detach:  limpet member-decap --iface eth0 --detach\n" +
	"Status:  limpet member-decap --status [--iface eth0] [-o json]\n" +
	"The member must hold the virtual servers' addresses on a local interface (lo or a dummy), as for dsr."

// memberDecap is 'limpet member-decap': attach, --detach or --status.
func (env *Env) memberDecap(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	pin, iface := c.String("decap-pin-path"), c.String("iface")
	if c.Bool("detach") && c.Bool("status") {
		return usagef("member-decap: --detach and --status do not go together")
	}
	if c.Bool("status") {
		return decapStatus(env.Stdout, pin, iface, format)
	}
	if iface == "" {
		return usagef("member-decap: --iface is required (or --status)")
	}
	if c.Bool("detach") {
		if c.IsSet("gue-port") || c.IsSet("only-to") {
			return usagef("member-decap: --gue-port and --only-to mean nothing with --detach")
		}
		if err := loader.DetachDecap(pin, iface); err != nil {
			if errors.Is(err, loader.ErrDecapNotAttached) || errors.Is(err, loader.ErrNoSuchIface) {
				return &usageError{err}
			}
			return err
		}
		fmt.Fprintf(env.Stdout, "decapsulator detached from %s\n", iface)
		return nil
	}
	port := c.Uint("gue-port")
	if port == 0 || port > 65535 {
		return usagef("member-decap: --gue-port %d: want a UDP port, 1-65535", port)
	}
	var onlyTo []netip.Addr
	for _, v := range c.StringSlice("only-to") {
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return usagef("member-decap: --only-to %q: want an IPv4 or IPv6 address", v)
		}
		onlyTo = append(onlyTo, a)
	}
	if len(onlyTo) > loader.MaxDecapDestinations {
		return usagef("member-decap: --only-to: %d addresses, at most %d", len(onlyTo), loader.MaxDecapDestinations)
	}
	s, err := loader.AttachDecap(loader.DecapOptions{PinPath: pin, Iface: iface, GUEPort: uint16(port), OnlyTo: onlyTo})
	if errors.Is(err, loader.ErrNoSuchIface) {
		return &usageError{err}
	}
	if err != nil {
		return err
	}
	if format == "json" {
		return writeDecapJSON(env.Stdout, pin, []loader.DecapStatus{s})
	}
	fmt.Fprintf(env.Stdout, "decapsulating IPIP, IPv6-in-IP and GUE (UDP port %d) to %s on %s (ifindex %d, program id %d); pinned under %s/%s\n",
		s.GUEPort, destinations(s.OnlyTo), s.Iface, s.Ifindex, s.ProgramID, pin, s.Iface)
	return nil
}

func decapStatus(w io.Writer, pin, iface, format string) error {
	var list []loader.DecapStatus
	if iface != "" {
		s, err := loader.DecapStatusOf(pin, iface)
		if errors.Is(err, loader.ErrDecapNotAttached) || errors.Is(err, loader.ErrNoSuchIface) {
			return &usageError{err}
		}
		if err != nil {
			return err
		}
		list = []loader.DecapStatus{s}
	} else {
		var err error
		if list, err = loader.DecapStatuses(pin); err != nil {
			return err
		}
	}
	if format == "json" {
		return writeDecapJSON(w, pin, list)
	}
	if len(list) == 0 {
		fmt.Fprintf(w, "no decapsulator attached (nothing pinned under %s)\n", pin)
		return nil
	}
	for _, s := range list {
		state := fmt.Sprintf("ifindex %d", s.Ifindex)
		if s.Gone {
			state = "interface gone: the link is defunct; detach it"
		}
		fmt.Fprintf(w, "%s: %s, GUE port %d, packets to %s, program id %d\n", s.Iface, state, s.GUEPort, destinations(s.OnlyTo), s.ProgramID)
		fmt.Fprintf(w, "  %-14s %14s %16s\n", "counter", "packets", "bytes")
		for _, c := range s.Counts {
			fmt.Fprintf(w, "  %-14s %14d %16d\n", c.Stat, c.Packets, c.Bytes)
		}
	}
	return nil
}

func writeDecapJSON(w io.Writer, pin string, list []loader.DecapStatus) error {
	v := DecapStatusView{PinPath: pin, Interfaces: []DecapView{}}
	for _, s := range list {
		dv := DecapView{Iface: s.Iface, Ifindex: s.Ifindex, Gone: s.Gone, GUEPort: s.GUEPort, OnlyTo: []string{}, ProgramID: s.ProgramID, Counters: map[string]DecapCount{}}
		for _, a := range s.OnlyTo {
			dv.OnlyTo = append(dv.OnlyTo, a.String())
		}
		for _, c := range s.Counts {
			dv.Counters[c.Stat.String()] = DecapCount{Packets: c.Packets, Bytes: c.Bytes}
		}
		v.Interfaces = append(v.Interfaces, dv)
	}
	return writeJSON(w, v)
}

func destinations(onlyTo []netip.Addr) string {
	if len(onlyTo) == 0 {
		return "any destination"
	}
	var b strings.Builder
	for i, a := range onlyTo {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.String())
	}
	return b.String()
}
