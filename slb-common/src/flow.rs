//! Connection-table entries.
use crate::Addr;

/// A 5-tuple as it appears in a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad1: u8,
    pub _pad2: u16,
}

/// Where to send a translated packet: cached result of `bpf_fib_lookup`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress device; 0 = not resolved yet.
    pub ifindex: u32,
    /// MTU of the egress device: a bigger packet gets an ICMP "too big"
    /// instead of being redirected (and silently dropped by the driver).
    pub mtu: u16,
    pub _pad: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// Value of the `FLOWS` map, keyed by the client-side tuple
/// (client → VIP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// `bpf_ktime_get_coarse_ns` of the last refresh.
    pub seen_ns: u64,
    pub backend_id: u32,
    /// `Backend::generation` when the flow was scheduled.
    pub backend_gen: u32,
    pub listener_id: u32,
    /// FULLNAT source port towards the backend (network order); 0 in NAT
    /// and DR mode.
    pub snat_port: u16,
    /// `FLOW_F_*`.
    pub flags: u16,
    /// FULLNAT source address towards the backend.
    pub snat_addr: Addr,
    /// Next hop towards the backend; `ifindex` 0 = look it up.
    pub nh: NextHop,
    /// The listener's idle timeout when the flow was scheduled (the fast
    /// path checks it without looking the listener up).
    pub idle_timeout_s: u32,
}

/// Value of the `BACKEND_NH` array (by backend id): the next hop towards a
/// backend, shared by all its flows and refreshed at most once a second.
/// Routing is by destination, so one FIB lookup serves every flow of the
/// backend instead of one per flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendHop {
    pub seen_ns: u64,
    pub nh: NextHop,
    /// `Backend::generation` the entry was resolved for: a backend id given
    /// to another address must not inherit its predecessor's next hop.
    pub generation: u32,
}

/// A FIN or RST was seen, either way: the flow no longer counts as active
/// (`wlc`, status), and the fast path leaves it to the slow path.
pub const FLOW_F_CLOSING: u16 = 1;
/// The flow is forwarded in `nat` mode (only the destination rewritten).
pub const FLOW_F_NAT: u16 = 2;
/// The flow is forwarded in `dr` mode (only the MAC rewritten).
pub const FLOW_F_DR: u16 = 4;
/// The client sent a FIN.
pub const FLOW_F_FIN_CLIENT: u16 = 8;
/// The backend sent a FIN.
pub const FLOW_F_FIN_BACKEND: u16 = 16;
/// An RST was seen.
pub const FLOW_F_RST: u16 = 32;

/// The connection is over: a FIN each way, or an RST. Only then is it
/// forgotten after the short `limits::CLOSING_TIMEOUT_S`; a half-closed
/// one (one FIN: the other side may still send) may pause as long as an
/// open one.
pub const fn flow_ended(flags: u16) -> bool {
    const BOTH: u16 = FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND;
    flags & FLOW_F_RST != 0 || flags & BOTH == BOTH
}

/// How long a flow entry lives without traffic: its listener's idle
/// timeout, cut to `limits::CLOSING_TIMEOUT_S` once the connection is
/// over (`flow_ended`). The dataplane expires entries by it, and `slb
/// flows` shows the time left by it.
pub const fn entry_timeout_s(flags: u16, idle_timeout_s: u32) -> u32 {
    let closing = crate::limits::CLOSING_TIMEOUT_S;
    if flow_ended(flags) && idle_timeout_s > closing {
        closing
    } else {
        idle_timeout_s
    }
}

/// Value of the `REVERSE` map, keyed by the backend-side tuple of a reply
/// (backend → FULLNAT source address; backend → client in `nat` mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reverse {
    pub seen_ns: u64,
    pub client: Addr,
    pub vip: Addr,
    /// Network byte order.
    pub client_port: u16,
    /// Network byte order.
    pub vip_port: u16,
    pub backend_id: u32,
    pub listener_id: u32,
    pub _pad: u32,
    /// Next hop towards the client; `ifindex` 0 = look it up.
    pub nh: NextHop,
    pub _pad2: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The eBPF side and userspace must agree byte for byte; a field added
    // without its padding would silently shift everything after it.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<NextHop>(), 20);
        assert_eq!(size_of::<Flow>(), 64);
        assert_eq!(size_of::<Reverse>(), 80);
        assert_eq!(size_of::<BackendHop>(), 32);
    }
}
