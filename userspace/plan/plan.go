// Package plan is the one package that reads a config for the rest of
// limpet: Compile turns it into a desired.Desired, what each consumer runs
// on (the daemon, the proxy, the health monitors, the mirror, the BGP
// speaker), and keeps the ids it assigns stable across reloads and restarts
// so open flows and persistence entries keep meaning the same thing.
//
//   - compile.go: Compile and Load (read, validate, compile a file);
//   - build.go: the L4 datapath's map contents (loader.State) and the
//     desired.Meta that names every id;
//   - ids.go: the stable id allocation;
//   - l7.go, health.go, mirror.go, bgp.go: the proxy's l7/spec.Spec, the
//     health monitors, the mirroring node's config and scope, and the BGP
//     speaker's config.
package plan
