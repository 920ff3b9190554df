// Package mirror streams persistence entries between limpet nodes, so that a
// client keeps its server when another node takes over its traffic (the
// seed's "HA Persistence Mirroring").
//
// # Use
//
// The daemon implements Local (Snapshot: every entry of the mirrored
// tables; Apply: install a received entry, newer wins), builds a Node with
// New, and runs it with Run. It calls Publish for every change its own
// datapath makes (created, server changed, expired: the events of the
// datapath's ring buffer), and never for the entries it installs through
// Apply, so entries are not echoed back. Publish never blocks. Status
// describes every peer for limpet status.
//
// Only tables in scope are mirrored: SetScope (plan.MirrorScope for the
// config's profiles with ha_mirroring: true) filters what Publish queues,
// what a bulk sync sends and what Apply receives. Table keys are
// ids.TableKey's: "profile:NAME" for a shared table, "profile:NAME/vs:VS"
// for a private one, for L4 and L7 tables alike.
//
// # Peers and modes
//
// A node dials every address in Peers, forever, with exponential backoff
// and jitter, and accepts authenticated peers on Listen, listed or not. Two
// nodes that list each other keep one connection: when both dial at once,
// both keep the one dialed by the node with the lower random instance
// number, which each learns in the handshake. Every connection carries
// entries both ways.
//
// On every connection each side first sends a bulk sync (Local.Snapshot),
// then streams what is published. While a peer is down nothing is queued
// for it: the bulk sync at its next connection carries the whole table.
// Each connection has a bounded queue; a full queue drops new entries and
// counts them, and the connection is bulk synced again once its queue has
// drained (at most every ResyncInterval), so an overflow heals itself. An
// entry queued again before it was sent replaces the queued version.
//
// Both modes run the same protocol, with no roles: every node publishes what
// its own datapath does, and applies what its peers send. In
// active_standby only the node that holds the VIP sees traffic, so in
// practice entries flow from it to the standby; when a router moves the
// VIP, the other node starts publishing without any reconfiguration, and
// after a restart of either node the bulk syncs bring both up to date.
// Static roles would break that fail-back, because limpet does not move the
// VIP itself. In active_active both nodes take traffic at once and may
// create entries for the same client; Newer resolves such conflicts the
// same way on both nodes, so they converge. Peers refuse a peer of the
// other mode, because mixing them means the operators disagree about
// whether both nodes take traffic. For the daemon the difference is in
// Apply: in active_active a received Delete should not remove an entry that
// live local connections hold (the peer only saw its own connections end).
//
// # Protocol
//
// TCP, in one of two authentication modes, every byte after the handshake
// in frames.
//
// Pre-shared key (PSK, at least 32 bytes). Both sides send a hello
// ("LIMPETMR", version 1, auth method, mode, a fresh 32-byte random nonce,
// a random 64-bit instance number, the advertised address), the dialer
// first. Let T = SHA-256(label | dialer's hello | acceptor's hello). The
// dialer sends HMAC-SHA256(psk, "limpet-mirror v1 dialer proof" | T); the
// acceptor checks it in constant time and answers with one verdict byte (1:
// refused, then it closes) or 0 followed by HMAC-SHA256(psk,
// "limpet-mirror v1 acceptor proof" | T), which the dialer checks. Both
// sides thus prove the key over both fresh nonces, with direction-specific
// labels: a recorded handshake cannot be replayed (the other side's nonce
// is new) nor a proof reflected. Each direction then has its own
// AES-256-GCM key, HKDF-SHA256(psk, salt T, info "limpet-mirror v1 key
// dialer to acceptor" or "… acceptor to dialer"). A frame is
//
//	u32 length | AES-GCM(payload), nonce = 64-bit frame sequence number, AAD = length
//
// The sequence number counts from 0 in each direction and is not sent, so
// a frame that is replayed, reordered, dropped, altered or forged fails to
// open, and the connection is closed. The key is never logged.
//
// TLS: TLS 1.3 only, both sides present a certificate and accept only a
// peer whose certificate the shared CA signed (serverAuth and clientAuth
// usages); host names are not checked, so the CA should sign mirroring
// peers only. The hellos are then exchanged inside TLS, and frames are
// u32 length | payload.
//
// A frame's payload is at most MaxFrameSize (1 MiB) and starts with its
// type:
//
//	1 entries     u16 count, then count entries
//	2 sync begin  (empty)
//	3 sync end    u64 number of entries in the bulk sync
//	4 heartbeat   i64 sender's wall clock (Unix ns)
//	5 goodbye     u8 length, reason
//
// An entry is u8 op (1 upsert, 2 delete) | u8 table length | table |
// uvarint key length (at most 4096) | key | client (u8 family 0, 4 or 6,
// then 0, 4 or 16 bytes) | server (the same, then u16 port when present) |
// i64 created | i64 updated (Unix ns, 0 for the zero time); it must pass
// Entry.Validate. An idle connection sends a heartbeat every
// HeartbeatInterval; a connection that receives nothing, or cannot send,
// for HeartbeatTimeout is closed. A peer that fails authentication, sends
// a frame longer than the maximum, a truncated frame, an unknown message
// type, trailing bytes or an invalid entry is logged (remote address and
// reason) and its connection closed; other connections are not affected.
// At most MaxPendingHandshakes inbound connections may be authenticating
// at once, each for at most HandshakeTimeout.
package mirror
