//! Sizes of the maps whose capacity is fixed when the program is loaded.
//! The agent validates configuration against these, so the XDP program never
//! sees an index it cannot hold.

/// Slots of the `DESTS` table (a power of two). Four times the most
/// addresses a valid configuration can put in it (`MAX_BACKENDS` `nat`
/// backends, `MAX_LISTENERS` VIPs, `MAX_SNAT_ADDRS` of each family), so
/// that all of them are placed within `DEST_PROBES` (Robin Hood placement
/// at a quarter full); 20 bytes a slot.
pub const DEST_SLOTS: u32 = 16384;
/// Longest probe sequence in the `DESTS` table; the agent refuses a set of
/// addresses it cannot place within it.
pub const DEST_PROBES: u32 = 8;
/// Listener slots (L4 listeners with an id; http/https listeners need none).
pub const MAX_LISTENERS: u32 = 64;
/// Backend slots across all listeners.
pub const MAX_BACKENDS: u32 = 4096;
/// FULLNAT source addresses per family.
pub const MAX_SNAT_ADDRS: u32 = 64;
/// Entries of the ACL trie, across all listeners (a listener's CIDRs of its
/// VIP's family, each once).
pub const MAX_ACL_ENTRIES: u32 = 65536;
/// Devices the program can redirect to.
pub const MAX_DEVICES: u32 = 64;
/// Default Maglev lookup-table size (prime).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Default connection-table size.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Each listener owns two lookup tables: the live one and the one the agent
/// rewrites, so a table swap is a single listener-entry update.
pub const RINGS_PER_LISTENER: u32 = 2;
/// Lookup-table slots per element of the `RING` map. An array map rounds
/// each value up to 8 bytes, so one 4-byte slot per element took twice its
/// size (64 MiB at the default table size); and the agent writes a table
/// with one system call per element.
pub const RING_CHUNK: u32 = 16;
// `RING` holds `MAX_LISTENERS * RINGS_PER_LISTENER` tables of any size in
// whole elements.
const _: () = assert!((MAX_LISTENERS * RINGS_PER_LISTENER).is_multiple_of(RING_CHUNK));
/// Lowest source port the FULLNAT translation hands out.
pub const SNAT_PORT_MIN: u16 = 1024;
/// How many candidate source ports are tried before a new flow is dropped.
pub const SNAT_PORT_TRIES: u32 = 8;
/// The flow timestamp and cached next hop are refreshed at most this often.
pub const REFRESH_NS: u64 = 1_000_000_000;
/// Slots of each per-CPU cache of flow-table and reply-table entries the
/// fast path reads (`FLOW_CACHE`, `REPLY_CACHE`; a power of two).
pub const CACHE_SLOTS: u32 = 1024;
/// Idle timeout of a TCP flow after its FIN or RST (seconds).
pub const CLOSING_TIMEOUT_S: u32 = 10;
/// A FULLNAT source (address and port towards one backend) of a flow that
/// ended with a FIN is given to another client after this long (seconds):
/// Linux's TIME_WAIT (`TCP_TIMEWAIT_LEN`), during which a backend that
/// closed first still holds the old connection on that tuple.
pub const SNAT_REUSE_AFTER_CLOSE_S: u32 = 60;
/// The reverse entry of a FULLNAT source given to another client must have
/// been idle this long, so that no CPU's cached copy of it (used while
/// within `REFRESH_NS` of the clock) can still translate a reply.
pub const SNAT_REUSE_QUIET_NS: u64 = 3 * REFRESH_NS;
/// Backends a `wlc` listener compares per new flow (the table holds each
/// live backend once).
pub const MAX_WLC_BACKENDS: u32 = 64;
/// Value of a lookup-table slot with no backend.
pub const NO_BACKEND: u32 = u32::MAX;
/// Map-layout version, written into the pinned state (`VERSION` map) so an
/// agent never adopts maps laid out by an incompatible build (map types
/// and sizes, and where `hash::dest_slot` places an address in `DESTS`).
pub const LAYOUT_VERSION: u32 = 7;
