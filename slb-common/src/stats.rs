//! Per-CPU counters. The agent sums the per-CPU values.

/// Counters kept per listener and per backend (`LISTENER_STATS`,
/// `BACKEND_STATS`). "in" is client → backend, "out" is backend → client
/// (only seen in `fullnat` and `nat` mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// New flows dropped: no backend is up.
    pub drop_no_backend: u64,
    /// New flows dropped: the ACL refused the client.
    pub drop_acl: u64,
    /// New flows dropped: no free FULLNAT source port.
    pub drop_no_port: u64,
}

/// Indexes of the `GLOBAL_STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalCounter {
    /// Passed on: not for a VIP and not a reply of a translated flow.
    NotForUs = 0,
    /// Malformed or truncated headers; new flows from one of our own
    /// addresses (spoofed, dropped).
    ParseError = 1,
    /// New flows dropped because their listener had no backend up.
    NoBackend = 2,
    /// Packets to a VIP that found no flow entry (new or expired flows).
    FlowMiss = 3,
    /// Translated packets handed to the kernel because the FIB had no
    /// neighbour entry yet (the kernel resolves it).
    FibPass = 4,
    /// Translated packets dropped because the FIB had no route, and `dr`
    /// packets dropped because it had no neighbour entry (the kernel
    /// would route them by the VIP).
    FibDrop = 5,
    /// Packets for a VIP passed to the kernel unchanged (fragments, IP
    /// options, extension headers, VLAN tags).
    Unsupported = 6,
    /// ICMP errors about a translated flow, translated and forwarded.
    IcmpTranslated = 7,
    /// "Fragmentation needed" / "packet too big" sent to a client whose
    /// packet exceeds the MTU towards the backend.
    IcmpTooBig = 8,
    /// Packets bigger than the next hop's MTU that could not be answered
    /// (IPv4 without DF) and were dropped.
    TooBigDrop = 9,
}

/// Number of slots in `GLOBAL_STATS`.
pub const GLOBAL_COUNTERS: u32 = 10;
