//! The packet path: classify, then forward to a backend or back to a
//! client.
use crate::{
    acl, cache, dests,
    fib::{self, Route},
    flow::{
        active_add, idle_past_timeout, kept_alive_by_replies, mark_closing,
        mark_closing_from_reply, mark_inactive, nat_bind, nat_reply_live, snat_bind, still_valid,
        SnatRequest,
    },
    icmp,
    maps::{scratch, BACKEND_NH, FLOWS, FLOW_CACHE, LISTENERS, REPLY_CACHE, REVERSE, SETTINGS},
    nat::{rewrite, rewrite_inline, Rewrite},
    parse::{
        flow_key, lengths_ok, packet_len, parse_into, parse_l4, L3, PARSED_IP, PARSED_OTHER,
        TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
    persist, schedule,
    stats::{self, Dir, Drop},
};
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext,
};
use slb_common::{
    flow::{FLOW_F_CLOSING, FLOW_F_DR, FLOW_F_NAT},
    is_martian_source,
    limits::REFRESH_NS,
    listener::{DEST_NAT_BACKEND, DEST_SNAT, DEST_VIP, MODE_DR, MODE_FULLNAT, MODE_NAT},
    Addr, Backend, Flow, FlowKey, GlobalCounter, Listener, NextHop, VipKey, PROTO_TCP,
};

#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    // Filled by `parse_into`, not zero-initialised first: zeroing the
    // struct costs a `memset` call (a byte loop) on every packet.
    let mut l3 = MaybeUninit::<L3>::uninit();
    match parse_into(ctx, l3.as_mut_ptr()) {
        PARSED_IP => {}
        PARSED_OTHER => {
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        }
        _ => {
            stats::global(GlobalCounter::ParseError);
            return xdp_action::XDP_PASS;
        }
    }
    // SAFETY: `parse_into` wrote the whole value when it returned
    // `PARSED_IP`.
    let l3 = unsafe { l3.assume_init_ref() };
    if !lengths_ok(ctx, l3) {
        stats::global(GlobalCounter::ParseError);
        return xdp_action::XDP_PASS;
    }
    if let Some(s) = scratch() {
        // SAFETY: helper without arguments; the coarse clock is ~10x
        // cheaper than bpf_ktime_get_ns and a jiffy of precision is plenty
        // for idle timeouts.
        s.now = unsafe { bpf_ktime_get_coarse_ns() };
    }
    let dest = dests::lookup(&l3.dst);
    if dest == 0 {
        return not_for_us(ctx, l3);
    }
    if l3.unsupported {
        if l3.icmp {
            return icmp::translate(ctx, l3.family, dest, false);
        }
        stats::global(GlobalCounter::Unsupported);
        return xdp_action::XDP_PASS;
    }
    dispatch(ctx, l3, dest)
}

/// Verdicts of the path's subprograms beyond the XDP actions: no usable
/// flow entry (`established`), and a packet too big for its next hop
/// (answered by `dispatch`, see `Scratch::mtu`).
const NO_FLOW: u32 = u32::MAX;
const TOO_BIG: u32 = u32::MAX - 1;
/// `pick_backend` / `bind_source` succeeded.
const OK: u32 = u32::MAX - 2;

// The packet path is split into subprograms (`#[inline(never)]`) called
// from here, one after the other: each gets its own stack frame, and the
// verifier's 512-byte limit applies to the deepest chain of frames, not to
// everything inlined into one. Values passed between steps live in the
// per-CPU scratch space.
#[inline(never)]
fn dispatch(ctx: &XdpContext, l3: &L3, dest: u32) -> u32 {
    let Some(l4) = parse_l4(ctx, l3) else {
        stats::global(GlobalCounter::ParseError);
        return xdp_action::XDP_PASS;
    };
    let key = flow_key(l3, &l4);
    let mut verdict = xdp_action::XDP_PASS;
    let mut known = false;
    if dest & DEST_VIP != 0 {
        let vip = VipKey {
            addr: l3.dst,
            port: l4.dport,
            proto: l3.proto,
            _pad: 0,
        };
        // SAFETY: a map value stays valid for the whole program run (the
        // agent replaces entries, RCU frees the old ones later: the map is
        // not preallocated, see `maps::LISTENERS`).
        if let Some(listener) = unsafe { LISTENERS.get(vip) } {
            known = true;
            verdict = established(ctx, l3, &key, l4.tcp_flags, listener);
            if verdict == NO_FLOW {
                verdict = pick_backend(&key, listener);
                if verdict == OK {
                    store_way_back(ctx);
                    verdict = bind_source(l3, &key, listener);
                }
                if verdict == OK {
                    verdict = commit_flow(ctx, l3, &key, l4.tcp_flags, listener);
                }
            }
        }
    }
    if !known && dest & DEST_SNAT != 0 {
        known = true;
        verdict = to_client(ctx, l3, &key, l4.tcp_flags, false);
    }
    if !known {
        stats::global(GlobalCounter::NotForUs);
        return xdp_action::XDP_PASS;
    }
    finish(ctx, l3, verdict)
}

/// Answers a packet too big for its next hop, or returns the verdict.
#[inline(always)]
fn finish(ctx: &XdpContext, l3: &L3, verdict: u32) -> u32 {
    if verdict != TOO_BIG {
        return verdict;
    }
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    if l3.df {
        return icmp::too_big(ctx, l3.family, s.mtu);
    }
    stats::global(GlobalCounter::TooBigDrop);
    xdp_action::XDP_DROP
}

/// Traffic not addressed to us, unless `nat` listeners exist: then a
/// packet from one of their backends may be a reply to translate.
#[inline(never)]
fn not_for_us(ctx: &XdpContext, l3: &L3) -> u32 {
    let nat = SETTINGS.get(0).is_some_and(|s| s.nat != 0);
    if nat && dests::lookup(&l3.src) & DEST_NAT_BACKEND != 0 {
        if l3.icmp {
            return icmp::translate(ctx, l3.family, 0, true);
        }
        if !l3.unsupported {
            if let Some(l4) = parse_l4(ctx, l3) {
                let verdict = to_client(ctx, l3, &flow_key(l3, &l4), l4.tcp_flags, true);
                return finish(ctx, l3, verdict);
            }
        }
    }
    stats::global(GlobalCounter::NotForUs);
    xdp_action::XDP_PASS
}

/// The time of the packet being handled, read once per packet (`process`):
/// every clock-helper call costs a call and a return.
#[inline(always)]
fn now_ns() -> u64 {
    scratch().map_or(0, |s| s.now)
}

/// Where a packet goes: `action == FORWARD` means to `nh`, else the XDP
/// action to return. A plain struct, always fully initialised: moving a
/// `Result<NextHop, u32>` copies its uninitialised bytes, and the verifier
/// rejects reads of registers it cannot prove were written.
#[derive(Clone, Copy)]
struct Hop {
    action: u32,
    nh: NextHop,
}

const FORWARD: u32 = u32::MAX - 3;

impl Hop {
    #[inline(always)]
    fn cached(nh: NextHop) -> Hop {
        Hop {
            action: FORWARD,
            nh,
        }
    }

    /// The next hop to cache in a flow entry (ifindex 0: none yet).
    #[inline(always)]
    fn cacheable(&self) -> NextHop {
        if self.action == FORWARD {
            self.nh
        } else {
            NextHop::default()
        }
    }
}

/// Resolves the next hop, counting the outcomes that are not a route.
/// Without a resolved neighbour the kernel forwards the packet (and
/// resolves the neighbour), except in `dr` mode: the packet keeps the VIP
/// as its destination, so the kernel would route it by the VIP, not to
/// the backend; it is dropped (the client retransmits; health checks keep
/// backends' neighbours resolved) and counted as dropped, not as passed.
#[inline(always)]
fn route(ctx: &XdpContext, l3: &L3, src: &Addr, dst: &Addr, dr: bool) -> Hop {
    let (action, nh) = match fib::lookup(ctx, l3.family, src, dst) {
        Route::Via(nh) => (FORWARD, nh),
        Route::NoNeigh if dr => {
            stats::global(GlobalCounter::FibDrop);
            (xdp_action::XDP_DROP, NextHop::default())
        }
        Route::NoNeigh => {
            stats::global(GlobalCounter::FibPass);
            (xdp_action::XDP_PASS, NextHop::default())
        }
        Route::Unreachable => {
            stats::global(GlobalCounter::FibDrop);
            (xdp_action::XDP_DROP, NextHop::default())
        }
    };
    Hop { action, nh }
}

/// The next hop towards backend `id`: its cache entry when refreshed
/// within the last second, else a FIB lookup that refreshes it. One lookup
/// per backend and second instead of one per flow.
#[inline(always)]
fn route_to_backend(ctx: &XdpContext, l3: &L3, src: &Addr, id: u32, b: &Backend, dr: bool) -> Hop {
    let now = now_ns();
    if let Some(c) = BACKEND_NH.get_ptr_mut(id) {
        // SAFETY: map value pointer, valid for this program run.
        let c = unsafe { &mut *c };
        if c.nh.ifindex != 0
            && c.generation == b.generation
            && now.wrapping_sub(c.seen_ns) <= REFRESH_NS
        {
            return Hop::cached(c.nh);
        }
        let hop = route(ctx, l3, src, &b.addr, dr);
        if hop.action == FORWARD {
            c.nh = hop.nh;
            c.seen_ns = now;
            c.generation = b.generation;
        }
        return hop;
    }
    let dst = &b.addr;
    route(ctx, l3, src, dst, dr)
}

/// `TOO_BIG` when the packet exceeds the next hop's MTU: checked before
/// any rewrite, so `dispatch` answers with ICMP quoting the packet as its
/// sender sent it (the sender lowers its path MTU) instead of the driver
/// dropping it silently.
#[inline(always)]
fn too_big(l3: &L3, hop: &Hop) -> bool {
    if hop.action == FORWARD && hop.nh.mtu != 0 && l3.tot_len > hop.nh.mtu {
        if let Some(s) = scratch() {
            s.mtu = hop.nh.mtu;
        }
        return true;
    }
    false
}

/// Sends a translated packet on: to the cached or resolved next hop, or
/// through the kernel when the neighbour is not known yet.
#[inline(always)]
fn send(ctx: &XdpContext, hop: &Hop) -> u32 {
    if hop.action == FORWARD {
        fib::transmit(ctx, &hop.nh)
    } else {
        hop.action
    }
}

/// The forwarding mode a flow was created with.
#[inline(always)]
fn flow_mode(flow: &Flow) -> u8 {
    if flow.flags & FLOW_F_DR != 0 {
        MODE_DR
    } else if flow.flags & FLOW_F_NAT != 0 {
        MODE_NAT
    } else {
        MODE_FULLNAT
    }
}

/// The addresses a flow's packets take towards the backend.
#[inline(always)]
fn backend_side(mode: u8, key: &FlowKey, flow: &Flow) -> (Addr, u16) {
    if mode == MODE_FULLNAT {
        (flow.snat_addr, flow.snat_port)
    } else {
        (key.src, key.sport)
    }
}

/// Rewrites towards the backend per forwarding mode (`dr`: addresses stay,
/// only the MACs change in `send`).
#[inline(always)]
fn rewrite_to_backend<const INLINE: bool>(
    ctx: &XdpContext,
    l3: &L3,
    mode: u8,
    src: &Addr,
    sport: u16,
    b: &Backend,
) -> bool {
    if mode == MODE_DR {
        return true;
    }
    let to = Rewrite {
        src,
        sport,
        dst: &b.addr,
        dport: b.port,
    };
    // Inlined where the caller's frame has room, a subprogram where the
    // call chain would exceed the stack limit otherwise.
    if INLINE {
        rewrite_inline(ctx, l3.family, l3.proto, &to)
    } else {
        rewrite(ctx, l3.family, l3.proto, &to)
    }
    .is_some()
}

/// A packet of a known flow whose backend is still valid: forwarded; else
/// `NO_FLOW`.
#[inline(never)]
fn established(
    ctx: &XdpContext,
    l3: &L3,
    key: &FlowKey,
    tcp_flags: u8,
    listener: &Listener,
) -> u32 {
    // Whatever happens to the entry here, the fast path of this CPU must
    // not keep using its old copy.
    cache::forget(&FLOW_CACHE, key);
    let Some(fp) = FLOWS.get_ptr_mut(key) else {
        return NO_FLOW;
    };
    // SAFETY: map value pointer, valid for this program run.
    let flow = unsafe { &mut *fp };
    if l3.proto == PROTO_TCP
        && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && flow.flags & FLOW_F_CLOSING != 0
    {
        // The client opens a new connection on the tuple of one that
        // ended (it reused its port): a new flow, not the closing one's
        // last packets (whose short timeout would soon cut it).
        return NO_FLOW;
    }
    let now = now_ns();
    if idle_past_timeout(flow, listener, now) {
        kept_alive_by_replies(flow, key, listener, now);
    }
    let Some(backend) = still_valid(flow, listener, now) else {
        // Expired or moved: it no longer counts for its old backend.
        mark_inactive(flow);
        return NO_FLOW;
    };
    // The mode the flow started with: a reload that changes the
    // listener's applies to new flows (as the fast path does). Read from
    // the entry at each use: a local would take a stack slot in a frame
    // at the verifier's limit.
    let (src, sport) = backend_side(flow_mode(flow), key, flow);
    let mut hop = Hop::cached(flow.nh);
    if flow.nh.ifindex == 0 || now.wrapping_sub(flow.seen_ns) > REFRESH_NS {
        flow.seen_ns = now;
        hop = route_to_backend(
            ctx,
            l3,
            &src,
            flow.backend_id,
            backend,
            flow_mode(flow) == MODE_DR,
        );
        flow.nh = hop.cacheable();
        if listener.persist_timeout_s != 0 {
            persist::touch(listener, &key.src, now);
        }
    }
    if too_big(l3, &hop) {
        return TOO_BIG;
    }
    if l3.proto == PROTO_TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        mark_closing(flow, tcp_flags, true);
    }
    if !rewrite_to_backend::<false>(ctx, l3, flow_mode(flow), &src, sport, backend) {
        return xdp_action::XDP_PASS;
    }
    stats::packet(
        listener.id,
        flow.backend_id,
        Dir::In,
        packet_len(ctx),
        false,
    );
    if tcp_flags & TCP_RST != 0 {
        // The client aborted: forget the flow now rather than holding a
        // table entry. Stray packets after it are scheduled afresh: with
        // `maglev` or `sh` to the same backend and FULLNAT source (same
        // hash, reverse entry reused), with `wrr`/`wlc` as any new flow.
        let _ = FLOWS.remove(key);
    }
    send(ctx, &hop)
}

/// A new flow: the ACL, persistence or the scheduler pick its backend
/// (into the scratch space). Returns `OK` or a drop.
#[inline(never)]
fn pick_backend(key: &FlowKey, listener: &Listener) -> u32 {
    let now = now_ns();
    stats::global(GlobalCounter::FlowMiss);
    if is_martian_source(&key.src) || dests::lookup(&key.src) & (DEST_VIP | DEST_SNAT) != 0 {
        // A client claiming one of our own addresses is spoofed: its
        // replies would be addressed to the load balancer itself, and a
        // reply to the VIP matches this very flow again (a VIP:53 → VIP:53
        // datagram makes a backend answer itself in a loop through the
        // upstream router, with the TTL renewed at each answer). Linux
        // drops a local source arriving from outside as a martian, as it
        // drops a multicast, broadcast or loopback one (whose flow's
        // answers would leave here addressed to a group or to everyone).
        stats::global(GlobalCounter::ParseError);
        return xdp_action::XDP_DROP;
    }
    if !acl::admits(listener, &key.src) {
        stats::drop(listener.id, Drop::Acl);
        return xdp_action::XDP_DROP;
    }
    let persisted = if listener.persist_timeout_s != 0 {
        persist::lookup(listener, &key.src, now)
    } else {
        None
    };
    let pinned = persisted.is_some();
    let picked = match persisted {
        Some(p) => Some(p),
        None => schedule::pick(listener, key),
    };
    let Some(mut picked) = picked else {
        stats::drop(listener.id, Drop::NoBackend);
        return xdp_action::XDP_DROP;
    };
    if pinned {
        persist::record(listener, &key.src, picked.0, &picked.1, now);
    } else if listener.persist_timeout_s != 0 {
        persist::claim(listener, &key.src, &mut picked, now);
    }
    let (backend_id, backend) = picked;
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    s.backend_id = backend_id;
    s.backend = backend;
    OK
}

/// Records the way back to the sender (the first next hop of the new
/// flow's replies) in the scratch space; a subprogram of its own to keep
/// `bind_source`'s call chain within the stack limit.
#[inline(never)]
fn store_way_back(ctx: &XdpContext) {
    let nh = fib::way_back(ctx).unwrap_or_default();
    if let Some(s) = scratch() {
        s.in_nh = nh;
    }
}

/// The source towards the picked backend: a FULLNAT address and port, or
/// the client's own (`nat`, `dr`), with the reverse entry replies need.
#[inline(never)]
fn bind_source(l3: &L3, key: &FlowKey, listener: &Listener) -> u32 {
    let now = now_ns();
    let (src, sport, flags) = match listener.mode {
        MODE_FULLNAT => match snat_bind(&SnatRequest {
            family: l3.family,
            key,
            listener_id: listener.id,
            now,
        }) {
            Some((a, p)) => (a, p, 0),
            None => {
                stats::drop(listener.id, Drop::NoPort);
                return xdp_action::XDP_DROP;
            }
        },
        MODE_NAT => {
            nat_bind(key, listener.id, now);
            (key.src, key.sport, FLOW_F_NAT)
        }
        _ => (key.src, key.sport, FLOW_F_DR),
    };
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    s.src = src;
    s.sport = sport;
    s.flow_flags = flags;
    OK
}

/// Records the new flow and forwards its first packet.
#[inline(never)]
fn commit_flow(
    ctx: &XdpContext,
    l3: &L3,
    key: &FlowKey,
    tcp_flags: u8,
    listener: &Listener,
) -> u32 {
    let now = now_ns();
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let (backend_id, src, sport) = (s.backend_id, s.src, s.sport);
    let hop = route_to_backend(
        ctx,
        l3,
        &src,
        backend_id,
        &s.backend,
        listener.mode == MODE_DR,
    );
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let fullnat = listener.mode == MODE_FULLNAT;
    s.flow = Flow {
        seen_ns: now,
        backend_id,
        backend_gen: s.backend.generation,
        listener_id: listener.id,
        snat_port: if fullnat { sport } else { 0 },
        flags: s.flow_flags,
        snat_addr: if fullnat { src } else { [0; 4] },
        nh: hop.cacheable(),
        idle_timeout_s: listener.idle_timeout_s,
    };
    active_add(backend_id, 1);
    if l3.proto == PROTO_TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        mark_closing(&mut s.flow, tcp_flags, true);
    }
    // A failed insert only costs a re-schedule on the next packet, which
    // picks the same backend and source port.
    let _ = FLOWS.insert(key, &s.flow, 0);
    let backend = s.backend;
    if too_big(l3, &hop) {
        return TOO_BIG;
    }
    if !rewrite_to_backend::<true>(ctx, l3, listener.mode, &src, sport, &backend) {
        return xdp_action::XDP_PASS;
    }
    stats::packet(listener.id, backend_id, Dir::In, packet_len(ctx), true);
    send(ctx, &hop)
}

/// A reply from a backend (`fullnat`: to a FULLNAT address; `nat`: to the
/// client), translated back to come from the VIP.
#[inline(never)]
fn to_client(ctx: &XdpContext, l3: &L3, key: &FlowKey, tcp_flags: u8, nat: bool) -> u32 {
    cache::forget(&REPLY_CACHE, key);
    let Some(rp) = REVERSE.get_ptr_mut(key) else {
        stats::global(GlobalCounter::NotForUs);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: map value pointer, valid for this program run.
    let rev = unsafe { &mut *rp };
    let now = now_ns();
    if nat && !nat_reply_live(rev, l3.proto, now) {
        stats::global(GlobalCounter::NotForUs);
        return xdp_action::XDP_PASS;
    }
    let bytes = packet_len(ctx);
    let mut hop = Hop::cached(rev.nh);
    if rev.nh.ifindex == 0 || now.wrapping_sub(rev.seen_ns) > REFRESH_NS {
        rev.seen_ns = now;
        hop = route(ctx, l3, &rev.vip, &rev.client, false);
        rev.nh = hop.cacheable();
    }
    if too_big(l3, &hop) {
        return TOO_BIG;
    }
    if l3.proto == PROTO_TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        mark_closing_from_reply(rev, l3.proto, tcp_flags);
    }
    let vip = rev.vip;
    let client = rev.client;
    let to = Rewrite {
        src: &vip,
        sport: rev.vip_port,
        dst: &client,
        dport: rev.client_port,
    };
    if rewrite(ctx, l3.family, l3.proto, &to).is_none() {
        return xdp_action::XDP_PASS;
    }
    stats::packet(rev.listener_id, rev.backend_id, Dir::Out, bytes, false);
    send(ctx, &hop)
}
