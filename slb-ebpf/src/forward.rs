//! The packet path: classify, then forward to a backend or back to a
//! client.
use crate::{
    fib::{self, Route},
    flow::{snat_bind, still_valid},
    maps::{DESTS, FLOWS, LISTENERS, REVERSE},
    nat::{rewrite, Rewrite},
    parse::{flow_key, parse_l3, parse_l4, Parsed, L3, TCP_RST},
    schedule,
    stats::{self, Dir, Drop},
};
use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_ktime_get_coarse_ns, programs::XdpContext,
};
use slb_common::{
    limits::REFRESH_NS,
    listener::{DEST_SNAT, DEST_VIP, MODE_FULLNAT},
    Addr, Flow, FlowKey, GlobalCounter, Listener, NextHop, VipKey,
};

#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let l3 = match parse_l3(ctx) {
        Parsed::Ip(l3) => l3,
        Parsed::Other => {
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        }
        Parsed::Malformed => {
            stats::global(GlobalCounter::ParseError);
            return xdp_action::XDP_PASS;
        }
    };
    let Some(&dest) = (unsafe { DESTS.get(l3.dst) }) else {
        stats::global(GlobalCounter::NotForUs);
        return xdp_action::XDP_PASS;
    };
    if l3.unsupported {
        stats::global(GlobalCounter::Unsupported);
        return xdp_action::XDP_PASS;
    }
    let Some(l4) = parse_l4(ctx, &l3) else {
        stats::global(GlobalCounter::ParseError);
        return xdp_action::XDP_PASS;
    };
    let key = flow_key(&l3, &l4);
    if dest & DEST_VIP != 0 {
        let vip = VipKey {
            addr: l3.dst,
            port: l4.dport,
            proto: l3.proto,
            _pad: 0,
        };
        // SAFETY: the listener value is copied before any map update.
        if let Some(listener) = unsafe { LISTENERS.get(vip) } {
            let listener = *listener;
            return to_backend(ctx, &l3, &key, l4.tcp_flags, &listener);
        }
    }
    if dest & DEST_SNAT != 0 {
        return to_client(ctx, &l3, &key);
    }
    stats::global(GlobalCounter::NotForUs);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: helper without arguments; the coarse clock is ~10x cheaper
    // than bpf_ktime_get_ns and a jiffy of precision is plenty for idle
    // timeouts.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
fn packet_len(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Resolves the next hop, counting the outcomes that are not a route.
#[inline(always)]
fn route(ctx: &XdpContext, l3: &L3, src: &Addr, dst: &Addr) -> Result<NextHop, u32> {
    match fib::lookup(ctx, l3.family, src, dst, l3.proto, l3.tot_len) {
        Route::Via(nh) => Ok(nh),
        Route::NoNeigh => {
            stats::global(GlobalCounter::FibPass);
            Err(xdp_action::XDP_PASS)
        }
        Route::TooBig | Route::Unreachable => {
            stats::global(GlobalCounter::FibDrop);
            Err(xdp_action::XDP_DROP)
        }
    }
}

/// Sends a translated packet on: to the cached or resolved next hop, or
/// through the kernel when the neighbour is not known yet.
#[inline(always)]
fn send(ctx: &XdpContext, hop: Result<NextHop, u32>) -> u32 {
    match hop {
        Ok(nh) => fib::transmit(ctx, &nh),
        Err(action) => action,
    }
}

#[inline(always)]
fn to_backend(ctx: &XdpContext, l3: &L3, key: &FlowKey, tcp_flags: u8, listener: &Listener) -> u32 {
    let now = now_ns();
    let bytes = packet_len(ctx);
    let fullnat = listener.mode == MODE_FULLNAT;

    if let Some(fp) = FLOWS.get_ptr_mut(key) {
        // SAFETY: map value pointer, valid for this program run.
        let flow = unsafe { &mut *fp };
        if let Some(backend) = still_valid(flow, listener, now) {
            let src = if fullnat { flow.snat_addr } else { key.src };
            let sport = if fullnat { flow.snat_port } else { key.sport };
            let mut hop = Ok(flow.nh);
            if flow.nh.ifindex == 0 || now.wrapping_sub(flow.seen_ns) > REFRESH_NS {
                flow.seen_ns = now;
                hop = route(ctx, l3, &src, &backend.addr);
                flow.nh = hop.unwrap_or_default();
            }
            if rewrite(
                ctx,
                l3.family,
                l3.proto,
                &Rewrite {
                    src: &src,
                    sport,
                    dst: &backend.addr,
                    dport: backend.port,
                },
            )
            .is_none()
            {
                return xdp_action::XDP_PASS;
            }
            stats::packet(listener.id, flow.backend_id, Dir::In, bytes, false);
            if tcp_flags & TCP_RST != 0 {
                // The client aborted: forget the flow now rather than
                // holding a table entry for the idle timeout. Stray
                // packets after it re-schedule to the same backend and
                // source port (same hash, reverse entry reused).
                let _ = FLOWS.remove(key);
            }
            return send(ctx, hop);
        }
    }

    stats::global(GlobalCounter::FlowMiss);
    let Some((backend_id, backend)) = schedule::pick(listener, key) else {
        stats::drop(listener.id, Drop::NoBackend);
        return xdp_action::XDP_DROP;
    };
    let (src, sport) = if fullnat {
        match snat_bind(l3.family, key, backend_id, &backend, listener.id, now) {
            Some(s) => s,
            None => {
                stats::drop(listener.id, Drop::NoPort);
                return xdp_action::XDP_DROP;
            }
        }
    } else {
        (key.src, key.sport)
    };
    let hop = route(ctx, l3, &src, &backend.addr);
    let flow = Flow {
        seen_ns: now,
        backend_id,
        backend_gen: backend.generation,
        listener_id: listener.id,
        snat_port: if fullnat { sport } else { 0 },
        _pad: 0,
        snat_addr: if fullnat { src } else { [0; 4] },
        nh: hop.unwrap_or_default(),
    };
    // A failed insert only costs a re-schedule on the next packet, which
    // picks the same backend and source port.
    let _ = FLOWS.insert(key, flow, 0);
    if rewrite(
        ctx,
        l3.family,
        l3.proto,
        &Rewrite {
            src: &src,
            sport,
            dst: &backend.addr,
            dport: backend.port,
        },
    )
    .is_none()
    {
        return xdp_action::XDP_PASS;
    }
    stats::packet(listener.id, backend_id, Dir::In, bytes, true);
    send(ctx, hop)
}

#[inline(always)]
fn to_client(ctx: &XdpContext, l3: &L3, key: &FlowKey) -> u32 {
    let Some(rp) = REVERSE.get_ptr_mut(key) else {
        stats::global(GlobalCounter::NotForUs);
        return xdp_action::XDP_PASS;
    };
    // SAFETY: map value pointer, valid for this program run.
    let rev = unsafe { &mut *rp };
    let now = now_ns();
    let bytes = packet_len(ctx);
    let mut hop = Ok(rev.nh);
    if rev.nh.ifindex == 0 || now.wrapping_sub(rev.seen_ns) > REFRESH_NS {
        rev.seen_ns = now;
        hop = route(ctx, l3, &rev.vip, &rev.client);
        rev.nh = hop.unwrap_or_default();
    }
    let vip = rev.vip;
    let client = rev.client;
    if rewrite(
        ctx,
        l3.family,
        l3.proto,
        &Rewrite {
            src: &vip,
            sport: rev.vip_port,
            dst: &client,
            dport: rev.client_port,
        },
    )
    .is_none()
    {
        return xdp_action::XDP_PASS;
    }
    stats::packet(rev.listener_id, rev.backend_id, Dir::Out, bytes, false);
    send(ctx, hop)
}
