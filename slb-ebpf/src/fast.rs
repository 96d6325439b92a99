//! The fast path, `slb_xdp`: what nearly every packet needs, with no
//! function call but the map and helper calls it cannot avoid. Traffic not
//! for us is passed after one inlined table lookup; packets of established
//! flows and their replies are translated and sent on from their flow
//! entry. Everything else — new flows (and SYNs), flows due for their
//! once-a-second refresh, FIN/RST, packets too big for the next hop, ICMP, anything
//! unusual — is handed to the slow path (`slb_xdp_slow`, `forward.rs`) by
//! a tail call, which also gives it a fresh stack.
//!
//! Why it matters: on CPUs with return-thunk mitigations (Spectre/SRSO)
//! every call and return costs several nanoseconds, more than most of the
//! work here.
use crate::{
    cache, dests, fib,
    maps::{BACKENDS, CLOCK, FLOWS, FLOW_CACHE, JUMP, REPLY_CACHE, REVERSE, SETTINGS},
    nat::{rewrite_inline, Rewrite},
    parse::{
        flow_key, lengths_ok, packet_len, parse_l3, parse_l4, Parsed, L3, TCP_ACK, TCP_FIN,
        TCP_RST, TCP_SYN,
    },
    stats::{self, Dir},
};
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use slb_common::{
    flow::{FLOW_F_CLOSING, FLOW_F_DR, FLOW_F_NAT},
    limits::REFRESH_NS,
    listener::{BACKEND_F_DOWN, DEST_NAT_BACKEND, DEST_SNAT, DEST_VIP},
    Flow, FlowKey, GlobalCounter, NextHop, Reverse, PROTO_TCP,
};

#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let l3 = match parse_l3(ctx) {
        Parsed::Ip(l3) => l3,
        Parsed::Other => {
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        }
        Parsed::Malformed => return slow(ctx),
    };
    let dest = dests::lookup(&l3.dst);
    if dest == 0 {
        // A `nat` backend replies to the client's address, not to ours:
        // handled below like a reply to a FULLNAT address.
        let nat = SETTINGS.get(0).is_some_and(|s| s.nat != 0);
        if !(nat && dests::lookup(&l3.src) & DEST_NAT_BACKEND != 0) {
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        }
    }
    if l3.unsupported || !lengths_ok(ctx, &l3) {
        return slow(ctx);
    }
    let Some(l4) = parse_l4(ctx, &l3) else {
        return slow(ctx);
    };
    // FIN/RST change the flow's state; a SYN without ACK almost always
    // opens a new flow, which the slow path looks up anyway.
    if l3.proto == PROTO_TCP
        && (l4.tcp_flags & (TCP_FIN | TCP_RST) != 0
            || l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN)
    {
        return slow(ctx);
    }
    let key = flow_key(&l3, &l4);
    let verdict = if dest & DEST_VIP != 0 {
        established(ctx, &l3, &key)
    } else if dest & DEST_SNAT != 0 || dest == 0 {
        reply(ctx, &l3, &key)
    } else {
        NOT_FAST
    };
    if verdict == NOT_FAST {
        return slow(ctx);
    }
    verdict
}

/// The packet needs the slow path.
const NOT_FAST: u32 = u32::MAX;

#[inline(always)]
fn slow(ctx: &XdpContext) -> u32 {
    // SAFETY: index 0 holds the slow path (set by the agent before it
    // attaches this program); the call does not return when it succeeds.
    unsafe { JUMP.tail_call(ctx, 0) };
    // No slow path installed: leave the packet to the kernel.
    xdp_action::XDP_PASS
}

/// The agent's clock (see `maps::CLOCK`): an inlined array read, no call.
#[inline(always)]
fn now_ns() -> u64 {
    CLOCK.get(0).copied().unwrap_or(0)
}

/// A next hop that was resolved within a second of `now` and that the
/// packet fits through. "Within" goes both ways: the slow path stamps
/// entries with the kernel clock, which runs up to a tick ahead of the
/// agent's `CLOCK`; once `CLOCK` stands still (no agent), entries the slow
/// path refreshes fall more than a second ahead of it, so every packet takes
/// the slow path, which needs no agent clock.
#[inline(always)]
fn usable(nh: &NextHop, seen_ns: u64, now: u64, l3: &L3) -> bool {
    nh.ifindex != 0
        && now.wrapping_sub(seen_ns).wrapping_add(REFRESH_NS) <= 2 * REFRESH_NS
        && (nh.mtu == 0 || l3.tot_len <= nh.mtu)
}

/// A packet of an established flow whose backend is still the one it was
/// scheduled to (its idle timeout cannot have passed: the flow was seen
/// within the last second, and timeouts are whole seconds). The entry comes
/// from this CPU's cache when its copy there is fresh, else from the flow
/// table, and is cached for the next packet.
#[inline(always)]
fn established(ctx: &XdpContext, l3: &L3, key: &FlowKey) -> u32 {
    let now = now_ns();
    let fresh = |f: &Flow| usable(&f.nh, f.seen_ns, now, l3);
    let Some(flow) = cache::entry(&FLOW_CACHE, &FLOWS, key, fresh) else {
        return NOT_FAST;
    };
    if flow.flags & FLOW_F_CLOSING != 0 {
        return NOT_FAST;
    }
    let Some(b) = BACKENDS.get(flow.backend_id) else {
        return NOT_FAST;
    };
    if b.generation != flow.backend_gen
        || b.listener_id != flow.listener_id
        || b.flags & BACKEND_F_DOWN != 0
    {
        return NOT_FAST;
    }
    if flow.flags & FLOW_F_DR == 0 {
        let nat = flow.flags & FLOW_F_NAT != 0;
        let to = Rewrite {
            src: if nat { &key.src } else { &flow.snat_addr },
            sport: if nat { key.sport } else { flow.snat_port },
            dst: &b.addr,
            dport: b.port,
        };
        if rewrite_inline(ctx, l3.family, l3.proto, &to).is_none() {
            return NOT_FAST;
        }
    }
    stats::packet(
        flow.listener_id,
        flow.backend_id,
        Dir::In,
        packet_len(ctx),
        false,
    );
    fib::transmit(ctx, &flow.nh)
}

/// A reply from a backend (to a FULLNAT address, or to the client for
/// `nat`), translated back; the entry is cached as in `established`.
#[inline(always)]
fn reply(ctx: &XdpContext, l3: &L3, key: &FlowKey) -> u32 {
    let now = now_ns();
    let fresh = |r: &Reverse| usable(&r.nh, r.seen_ns, now, l3);
    let Some(rev) = cache::entry(&REPLY_CACHE, &REVERSE, key, fresh) else {
        return NOT_FAST;
    };
    let to = Rewrite {
        src: &rev.vip,
        sport: rev.vip_port,
        dst: &rev.client,
        dport: rev.client_port,
    };
    if rewrite_inline(ctx, l3.family, l3.proto, &to).is_none() {
        return NOT_FAST;
    }
    stats::packet(
        rev.listener_id,
        rev.backend_id,
        Dir::Out,
        packet_len(ctx),
        false,
    );
    fib::transmit(ctx, &rev.nh)
}
