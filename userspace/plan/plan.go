// Package plan compiles a config into what each consumer runs on, so that
// the proxy, the health monitors, the mirror and the BGP speaker never read
// the config themselves; and it keeps the ids it assigns stable across
// reloads and restarts so open flows and persistence entries keep meaning
// the same thing.
//
//   - build.go: the L4 datapath's map contents (loader.State) and the Meta
//     that names every id;
//   - meta.go: Meta, stored next to the pinned maps, and the views the
//     daemon and the CLI derive from it;
//   - ids.go: the stable id allocation;
//   - l7.go, health.go, mirror.go, bgp.go: the proxy's l7/spec.Spec, the
//     health monitors, the mirroring node's config and scope, and the BGP
//     speaker's config;
//   - view.go: a pinned datapath with the names behind its ids, for a CLI
//     with no daemon.
package plan
