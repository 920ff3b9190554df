// Package desired is what a config asks for, compiled for every consumer
// (plan.Compile builds it): the L4 datapath's state and the Meta that names
// its ids, the proxy's spec, the health monitors, the mirror's config and
// scope, the BGP speaker's spec, and the daemon's settings. It imports no
// config: the daemon, the CLI and the admin API run on it without reading
// the file, and the Meta stored next to the pinned maps is read back into it.
package desired

import (
	"time"

	"github.com/limpet-lb/limpet/l7/spec"
	"github.com/limpet-lb/limpet/loader"
	"github.com/limpet-lb/limpet/userspace/bgp"
	"github.com/limpet-lb/limpet/userspace/health"
	"github.com/limpet-lb/limpet/userspace/metrics"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// Desired is one compiled config. A part that failed to compile carries its
// error next to it, so that each consumer reports it when it takes the part,
// as it always has: at start a bad part stops the daemon; on a reload some
// parts are kept running (see the daemon).
type Desired struct {
	Settings Settings
	Warnings []string
	Counts   Counts
	// VirtualServers lists every virtual server, in config order, for the
	// status; PoolMonitor names the health monitor of each pool that has one.
	VirtualServers []VirtualServer
	PoolMonitor    map[string]string

	// L4 is the datapath's state for the l4 virtual servers and Meta the
	// names behind its ids (plan.Build), or L4Err.
	L4    loader.State
	Meta  *Meta
	L4Err error

	// L7 is the proxy's spec, or L7Err.
	L7    spec.Spec
	L7Err error

	// Monitors are the health monitors' targets, or MonitorsErr.
	Monitors        []health.Target
	MonitorWarnings []string
	MonitorsErr     error

	// Mirror is the ha_mirroring node's config (nil without one), or
	// MirrorErr; MirrorScope says which tables it mirrors.
	Mirror      *mirror.Config
	MirrorErr   error
	MirrorScope func(table string) bool
	// MirrorMode is ha_mirroring.mode as the config spells it.
	MirrorMode string

	// HasBGP says the config has a bgp section; BGP is its spec, or BGPErr.
	HasBGP bool
	BGP    *bgp.Spec
	BGPErr error
}

// Settings are the daemon's own settings.
type Settings struct {
	PinPath, XDPMode, AdminSocket string
	Interfaces                    []string
	FlowTableSize                 int
	FlowTableSizeV6               int // 0: FlowTableSize
	GCInterval                    time.Duration
	MetricsListen                 string
	// MetricsAuth is the metrics listener's credentials, with the secret
	// read; nil means none. MetricsAuthKind is basic, bearer or none.
	MetricsAuth     *metrics.Credentials
	MetricsAuthKind string
	MetricsAuthErr  error
}

// Counts say how much a config holds.
type Counts struct {
	L4VirtualServers, HTTPVirtualServers, Pools, Members, Profiles int
}

// VirtualServer describes a virtual server for the status.
type VirtualServer struct {
	Name, Type, Address string
	Port                int
	Protocol            string
	Forwarding, Pool    string
	Profile             string
}
