package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"
)

// What the commands print with: -o json's documents, and the pieces of
// the tables of -o table.

// writeJSON writes v as -o json does: indented, one document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable is the writer of every table the commands print: columns
// two spaces apart.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// endpoint is addr:port, or addr alone when port is 0.
func endpoint(addr string, port int) string {
	if port == 0 {
		return addr
	}
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}

// safeEndpoint is endpoint for an address that may not parse.
func safeEndpoint(addr string, port int) string {
	if _, err := netip.ParseAddr(addr); err != nil {
		return addr
	}
	return endpoint(addr, port)
}

// plural is "1 entry", "2 entries", "3 tables".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// dash fills an empty table cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortDuration is an age or a time left, to the second under an hour.
func shortDuration(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
