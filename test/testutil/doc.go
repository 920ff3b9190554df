// Package testutil is limpet's one home for test scaffolding: the root gate
// (RequireRoot) and the gate on external tools (NeedTool), a private network
// namespace owned by one locked OS thread (NSThread, InNetns), the fixture
// world that datapath tests run in (World, Net), certificates (CA,
// SelfSigned), and the repository and its limpet binary (RepoRoot,
// LimpetBinary). It imports nothing of limpet's, so that every package's own
// tests can use it, loader's included.
package testutil
