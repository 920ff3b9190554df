// Package plan is the one package that reads a config for the rest of
// limpet: it compiles it into what each consumer runs on, and keeps the ids
// it assigns stable across reloads and restarts so open flows and
// persistence entries keep meaning the same thing.
//
//   - build.go: the L4 datapath's map contents (loader.State) and the Meta
//     that names every id;
//   - meta.go: Meta, stored next to the pinned maps, and the views the
//     daemon and the CLI derive from it;
//   - ids.go: the stable id allocation;
//   - health.go, mirror.go, bgp.go: the health monitors, the mirroring
//     node's config and scope, and the BGP speaker's config.
package plan
