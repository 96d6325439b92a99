//! ICMP errors about translated flows, and "too big" answers.
//!
//! An error quotes the packet that caused it. For the error to mean
//! anything to its receiver, the quote must show the addresses that side
//! used: a backend's "port unreachable" about `L:lport → B:bport` must reach
//! the client as an error about `C:cport → VIP:vport`, from the VIP. So the
//! quoted header, its ports and checksums, and the outer addresses are all
//! translated, and the error is forwarded like a packet of the flow. In
//! `dr` mode nothing is translated, and an error about a reply (addressed
//! to the VIP) goes to the flow's backend unchanged.
//!
//! Only headers at fixed offsets are handled (outer and quoted IPv4 without
//! options, quoted TCP/UDP); anything else goes to the kernel unchanged.
use crate::{
    bytes::{ld128, ld16, ld32, st128, st16, st32},
    fib::{self, Route},
    flow::nat_reply_live,
    maps::{scratch, BACKENDS, FLOWS, REVERSE},
    parse::{ptr_at, Family, ETH_LEN, PROTO_ICMP, PROTO_ICMPV6},
    stats,
};
use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_adjust_tail, programs::XdpContext,
    EbpfContext,
};
use slb_common::{
    csum::{checksum, CsumUpdate},
    flow::{FLOW_F_DR, FLOW_F_NAT},
    is_v4_mapped, v4_mapped, Addr, GlobalCounter, PROTO_TCP, PROTO_UDP,
};

/// Byte offsets of the fields an error translation touches.
struct Layout {
    outer_src: usize,
    outer_dst: usize,
    icmp: usize,
    inner_ip: usize,
    inner_proto: usize,
    inner_src: usize,
    inner_dst: usize,
    inner_l4: usize,
}

const V4: Layout = Layout {
    outer_src: ETH_LEN + 12,
    outer_dst: ETH_LEN + 16,
    icmp: ETH_LEN + 20,
    inner_ip: ETH_LEN + 28,
    inner_proto: ETH_LEN + 28 + 9,
    inner_src: ETH_LEN + 28 + 12,
    inner_dst: ETH_LEN + 28 + 16,
    inner_l4: ETH_LEN + 48,
};

const V6: Layout = Layout {
    outer_src: ETH_LEN + 8,
    outer_dst: ETH_LEN + 24,
    icmp: ETH_LEN + 40,
    inner_ip: ETH_LEN + 48,
    inner_proto: ETH_LEN + 48 + 6,
    inner_src: ETH_LEN + 48 + 8,
    inner_dst: ETH_LEN + 48 + 24,
    inner_l4: ETH_LEN + 88,
};

/// Frame length an error must have: up to the quoted ports and UDP
/// checksum (8 bytes of the quoted transport header).
const V4_NEED: usize = ETH_LEN + 56;
const V6_NEED: usize = ETH_LEN + 96;

#[inline(always)]
fn rd_addr(p: *const u8, family: Family) -> Addr {
    match family {
        Family::V4 => v4_mapped(ld32(p)),
        Family::V6 => ld128(p),
    }
}

/// Writes an address and feeds the change to the checksums given.
#[inline(always)]
fn wr_addr(p: *mut u8, family: Family, old: &Addr, new: &Addr, sums: &mut [&mut CsumUpdate]) {
    match family {
        Family::V4 => st32(p, new[3]),
        Family::V6 => st128(p, new),
    }
    for s in sums.iter_mut() {
        match family {
            Family::V4 => s.replace32(old[3], new[3]),
            Family::V6 => s.replace128(old, new),
        }
    }
}

/// Where a translated error goes, what it must say, and what it says now
/// (kept in the per-CPU scratch space between `plan` and `apply`).
#[derive(Clone, Copy)]
pub struct IcmpPlan {
    pub outer_src: Addr,
    /// `outer_src` is to be written (else the outer source stays).
    pub set_outer_src: bool,
    pub outer_dst: Addr,
    pub inner_src: Addr,
    pub inner_sport: u16,
    pub inner_dst: Addr,
    pub inner_dport: u16,
    /// For the FIB lookup and the transmit.
    pub route_src: Addr,
    pub route_dst: Addr,
    pub was_outer_src: Addr,
    pub was_outer_dst: Addr,
    pub was_inner_src: Addr,
    pub was_inner_dst: Addr,
    pub was_sport: u16,
    pub was_dport: u16,
    pub inner_proto: u8,
}

/// Handles an ICMP/ICMPv6 packet addressed to a VIP or a FULLNAT address
/// (`dest_flags` from `DESTS`), or coming from a `nat` backend
/// (`from_nat_backend`). Errors about a known flow are translated and
/// forwarded; everything else goes to the kernel.
#[inline(never)]
pub fn translate(ctx: &XdpContext, family: Family, dest_flags: u32, from_nat_backend: bool) -> u32 {
    // Two steps, each its own stack frame (see `forward::dispatch`).
    let verdict = plan(ctx, family, dest_flags, from_nat_backend);
    if verdict == PLANNED {
        if !apply(ctx, family) {
            return xdp_action::XDP_PASS;
        }
    } else if verdict != AS_IS {
        return verdict;
    }
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let (route_src, to) = (s.icmp.route_src, s.icmp.route_dst);
    stats::global(GlobalCounter::IcmpTranslated);
    match fib::lookup(ctx, family, &route_src, &to) {
        Route::Via(nh) => fib::transmit(ctx, &nh),
        // An error kept as it is stays addressed to the VIP: the kernel
        // would route it by the VIP, not to the backend (as `dr` packets,
        // `forward::route`).
        Route::NoNeigh if verdict == AS_IS => xdp_action::XDP_DROP,
        Route::NoNeigh => xdp_action::XDP_PASS,
        Route::Unreachable => xdp_action::XDP_DROP,
    }
}

/// `plan` found the flow the error is about.
const PLANNED: u32 = u32::MAX;
/// `plan` found a `dr` flow: the error goes to its backend unchanged.
const AS_IS: u32 = u32::MAX - 1;

/// Decides what the error must say (into `Scratch::icmp`), or the verdict
/// for an error that is not about a translated flow.
#[inline(never)]
fn plan(ctx: &XdpContext, family: Family, dest_flags: u32, from_nat_backend: bool) -> u32 {
    let lay = match family {
        Family::V4 => &V4,
        Family::V6 => &V6,
    };
    let base = match family {
        Family::V4 => ptr_at::<[u8; V4_NEED]>(ctx, 0).map(|p| p as *mut u8),
        Family::V6 => ptr_at::<[u8; V6_NEED]>(ctx, 0).map(|p| p as *mut u8),
    };
    let Some(base) = base else {
        return xdp_action::XDP_PASS;
    };
    let at = |off: usize| base.wrapping_add(off);
    // SAFETY: every offset below is inside the `need` bytes checked above.
    let (icmp_type, inner_proto, inner_vihl) =
        unsafe { (*at(lay.icmp), *at(lay.inner_proto), *at(lay.inner_ip)) };
    let is_error = match family {
        Family::V4 => icmp_type == 3 || icmp_type == 11,
        Family::V6 => icmp_type == 1 || icmp_type == 2 || icmp_type == 3,
    };
    // A quoted IPv4 fragment other than the first holds no transport
    // header: what sits where the ports would be is payload, which may
    // happen to name a flow. (Legit errors never quote one: RFC 1812
    // §4.3.2.7.) A quoted IPv6 fragment has a fragment header, refused
    // below as any extension header.
    let inner_ok = match family {
        Family::V4 => inner_vihl == 0x45 && u16::from_be(ld16(at(lay.inner_ip + 6))) & 0x1fff == 0,
        Family::V6 => inner_vihl >> 4 == 6,
    };
    if !is_error || !inner_ok || (inner_proto != PROTO_TCP && inner_proto != PROTO_UDP) {
        stats::global(GlobalCounter::Unsupported);
        return xdp_action::XDP_PASS;
    }
    let in_src = rd_addr(at(lay.inner_src), family);
    let in_dst = rd_addr(at(lay.inner_dst), family);
    if family == Family::V6 && (is_v4_mapped(&in_src) || is_v4_mapped(&in_dst)) {
        // Would name an IPv4 flow's tuple (see `parse::parse_l3`).
        stats::global(GlobalCounter::Unsupported);
        return xdp_action::XDP_PASS;
    }
    let in_sport = ld16(at(lay.inner_l4));
    let in_dport = ld16(at(lay.inner_l4 + 2));
    let outer_src = rd_addr(at(lay.outer_src), family);
    let outer_dst = rd_addr(at(lay.outer_dst), family);

    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let now = s.now;
    // The quoted packet reversed: the tuple of the packet it answers. In
    // the scratch space, as the values looked up below stay in their
    // maps: this frame is part of a call chain near the verifier's stack
    // limit.
    let answered = &mut s.rkey;
    answered.src = in_dst;
    answered.dst = in_src;
    answered.sport = in_dport;
    answered.dport = in_sport;
    answered.proto = inner_proto;
    answered._pad1 = 0;
    answered._pad2 = 0;
    let answered = &s.rkey;
    let p = &mut s.icmp;
    p.was_outer_src = outer_src;
    p.was_outer_dst = outer_dst;
    p.was_inner_src = in_src;
    p.was_inner_dst = in_dst;
    p.was_sport = in_sport;
    p.was_dport = in_dport;
    p.inner_proto = inner_proto;
    if from_nat_backend || dest_flags & slb_common::listener::DEST_SNAT != 0 {
        // About a packet we sent to a backend; the reply tuple of that
        // packet is its reverse entry.
        // SAFETY: map value, valid for this program run; read only.
        let Some(rev) = (unsafe { REVERSE.get(answered) }) else {
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        };
        if from_nat_backend && !nat_reply_live(rev, inner_proto, now) {
            // As for replies (`forward::to_client`): after the flow, the
            // tuple is the client talking to the backend directly, and
            // the error is about that.
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        }
        p.outer_src = rev.vip;
        p.set_outer_src = true;
        p.inner_dst = rev.vip;
        p.inner_dport = rev.vip_port;
        p.route_src = rev.vip;
        if from_nat_backend {
            // nat: the quote is client → backend; the client knows it as
            // client → VIP.
            p.outer_dst = outer_dst;
            p.inner_src = in_src;
            p.inner_sport = in_sport;
        } else {
            p.outer_dst = rev.client;
            p.inner_src = rev.client;
            p.inner_sport = rev.client_port;
        }
    } else {
        // About a reply we sent from the VIP to a client: the backend must
        // learn it, quoted as it sent the reply.
        // SAFETY: map value, valid for this program run; read only.
        let Some(flow) = (unsafe { FLOWS.get(answered) }) else {
            stats::global(GlobalCounter::NotForUs);
            return xdp_action::XDP_PASS;
        };
        let Some(b) = BACKENDS.get(flow.backend_id) else {
            return xdp_action::XDP_PASS;
        };
        if flow.flags & FLOW_F_DR != 0 {
            // Direct-routing replies never pass the LB, but errors about
            // them are addressed to the VIP, hence routed here. The
            // backend holds the VIP and knows the reply as quoted: the
            // error goes to it unchanged, as the flow's packets do (how
            // a "too big" reaches it, as with IPVS).
            if b.generation != flow.backend_gen {
                return xdp_action::XDP_PASS;
            }
            p.route_src = outer_src;
            p.route_dst = b.addr;
            return AS_IS;
        }
        let nat = flow.flags & FLOW_F_NAT != 0;
        let (to, to_port) = if nat {
            (in_dst, in_dport)
        } else {
            (flow.snat_addr, flow.snat_port)
        };
        p.outer_src = flow.snat_addr;
        p.set_outer_src = !nat;
        p.outer_dst = b.addr;
        p.inner_src = b.addr;
        p.inner_sport = b.port;
        p.inner_dst = to;
        p.inner_dport = to_port;
        p.route_src = if nat { outer_src } else { flow.snat_addr };
    }
    p.route_dst = p.outer_dst;
    PLANNED
}

/// Rewrites the error as `Scratch::icmp` says, checksums included.
#[inline(never)]
fn apply(ctx: &XdpContext, family: Family) -> bool {
    let lay = match family {
        Family::V4 => &V4,
        Family::V6 => &V6,
    };
    let base = match family {
        Family::V4 => ptr_at::<[u8; V4_NEED]>(ctx, 0).map(|p| p as *mut u8),
        Family::V6 => ptr_at::<[u8; V6_NEED]>(ctx, 0).map(|p| p as *mut u8),
    };
    let (Some(base), Some(s)) = (base, scratch()) else {
        return false;
    };
    let plan = &s.icmp;
    let at = |off: usize| base.wrapping_add(off);
    let (in_src, in_dst, in_sport, in_dport) = (
        plan.was_inner_src,
        plan.was_inner_dst,
        plan.was_sport,
        plan.was_dport,
    );
    let (outer_src, outer_dst, inner_proto) =
        (plan.was_outer_src, plan.was_outer_dst, plan.inner_proto);

    // Checksums: the outer IPv4 header, the ICMP message (with the IPv6
    // pseudo-header), the quoted IPv4 header and the quoted UDP datagram.
    let icmp_csum_p = at(lay.icmp + 2);
    let mut icmp_c = CsumUpdate::new(ld16(icmp_csum_p));
    let mut outer_c = CsumUpdate::new(ld16(at(ETH_LEN + 10)));
    let inner_csum_p = at(lay.inner_ip + 10);
    let mut inner_c = CsumUpdate::new(ld16(inner_csum_p));
    let udp_csum_p = at(lay.inner_l4 + 6);
    let old_udp = ld16(udp_csum_p);
    let mut udp_c = CsumUpdate::new(old_udp);
    let v6 = family == Family::V6;
    let udp = inner_proto == PROTO_UDP && (v6 || old_udp != 0);

    // Quoted addresses and ports.
    wr_addr(
        at(lay.inner_src),
        family,
        &in_src,
        &plan.inner_src,
        &mut [&mut icmp_c, &mut inner_c, &mut udp_c],
    );
    wr_addr(
        at(lay.inner_dst),
        family,
        &in_dst,
        &plan.inner_dst,
        &mut [&mut icmp_c, &mut inner_c, &mut udp_c],
    );
    st16(at(lay.inner_l4), plan.inner_sport);
    st16(at(lay.inner_l4 + 2), plan.inner_dport);
    icmp_c.replace16(in_sport, plan.inner_sport);
    icmp_c.replace16(in_dport, plan.inner_dport);
    udp_c.replace16(in_sport, plan.inner_sport);
    udp_c.replace16(in_dport, plan.inner_dport);
    if family == Family::V4 {
        let old = ld16(inner_csum_p);
        let new = inner_c.finish();
        st16(inner_csum_p, new);
        icmp_c.replace16(old, new);
    }
    if udp {
        let new = slb_common::csum::udp_nonzero(udp_c.finish());
        st16(udp_csum_p, new);
        icmp_c.replace16(old_udp, new);
    }
    // Outer addresses (part of the ICMPv6 pseudo-header).
    let mut no_sum = CsumUpdate::new(0);
    let pseudo: &mut CsumUpdate = if v6 { &mut icmp_c } else { &mut no_sum };
    if plan.set_outer_src {
        wr_addr(
            at(lay.outer_src),
            family,
            &outer_src,
            &plan.outer_src,
            &mut [&mut outer_c, pseudo],
        );
    }
    wr_addr(
        at(lay.outer_dst),
        family,
        &outer_dst,
        &plan.outer_dst,
        &mut [&mut outer_c, pseudo],
    );
    st16(icmp_csum_p, icmp_c.finish());
    if family == Family::V4 {
        st16(at(ETH_LEN + 10), outer_c.finish());
    }

    true
}

/// Bytes of the offending packet quoted in a "too big" answer: its IP
/// header and the first 8 bytes of its transport header.
const V4_QUOTE: usize = 28;
const V6_QUOTE: usize = 48;
const V4_ANSWER: usize = ETH_LEN + 20 + 8 + V4_QUOTE;
const V6_ANSWER: usize = ETH_LEN + 40 + 8 + V6_QUOTE;

/// Turns a packet that exceeds the next hop's MTU into the ICMP "too big"
/// answer to its sender (fragmentation needed / packet too big, with the
/// MTU), sent back out of the device it came from, from the address it
/// was sent to (the VIP).
#[inline(never)]
pub fn too_big(ctx: &XdpContext, family: Family, mtu: u16) -> u32 {
    let total = match family {
        Family::V4 => V4_ANSWER,
        Family::V6 => V6_ANSWER,
    };
    // What the answer needs, copied before the frame is cut: the MACs and
    // the start of the offending packet (its IP header holds both
    // addresses). Kept in the per-CPU scratch space, not on the stack.
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let (head, rest) = s.buf.split_at_mut(ETH_LEN + V6_QUOTE);
    match family {
        Family::V4 => {
            let Some(p) = ptr_at::<[u8; ETH_LEN + V4_QUOTE]>(ctx, 0) else {
                return xdp_action::XDP_DROP;
            };
            // SAFETY: bounds checked by `ptr_at`.
            head[..ETH_LEN + V4_QUOTE].copy_from_slice(unsafe { &*p });
        }
        Family::V6 => {
            let Some(p) = ptr_at::<[u8; ETH_LEN + V6_QUOTE]>(ctx, 0) else {
                return xdp_action::XDP_DROP;
            };
            // SAFETY: bounds checked by `ptr_at`.
            head.copy_from_slice(unsafe { &*p });
        }
    }
    let (start, end) = crate::parse::bounds(ctx);
    let len = end - start;
    if len < total {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: shrinking the frame to `total` bytes, which it exceeds.
    if unsafe { bpf_xdp_adjust_tail(ctx.as_ptr() as *mut _, total as i32 - len as i32) } != 0 {
        return xdp_action::XDP_DROP;
    }
    match family {
        Family::V4 => {
            let Some(p) = ptr_at::<[u8; V4_ANSWER]>(ctx, 0) else {
                return xdp_action::XDP_DROP;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let f = unsafe { &mut *p };
            write_eth(f, head, 0x0800);
            let q = &head[ETH_LEN..ETH_LEN + V4_QUOTE];
            let ip = &mut f[ETH_LEN..ETH_LEN + 20];
            ip[..12].copy_from_slice(&[
                0x45,
                0,
                0,
                (20 + 8 + V4_QUOTE) as u8,
                0,
                0,
                0,
                0,
                64,
                PROTO_ICMP,
                0,
                0,
            ]);
            // From the address the packet was sent to, to its sender.
            ip[12..16].copy_from_slice(&q[16..20]);
            ip[16..20].copy_from_slice(&q[12..16]);
            let c = checksum(ip).to_ne_bytes();
            ip[10..12].copy_from_slice(&c);
            let icmp = &mut f[ETH_LEN + 20..];
            icmp[..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, (mtu >> 8) as u8, mtu as u8]);
            icmp[8..].copy_from_slice(q);
            let c = checksum(icmp).to_ne_bytes();
            icmp[2..4].copy_from_slice(&c);
        }
        Family::V6 => {
            let Some(p) = ptr_at::<[u8; V6_ANSWER]>(ctx, 0) else {
                return xdp_action::XDP_DROP;
            };
            // SAFETY: bounds checked by `ptr_at`.
            let f = unsafe { &mut *p };
            write_eth(f, head, 0x86dd);
            let q = &head[ETH_LEN..];
            let plen = (8 + V6_QUOTE) as u8;
            let ip = &mut f[ETH_LEN..ETH_LEN + 40];
            ip[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, plen, PROTO_ICMPV6, 64]);
            ip[8..24].copy_from_slice(&q[24..40]);
            ip[24..40].copy_from_slice(&q[8..24]);
            let m = mtu as u32;
            let msg = &mut rest[..40 + 8 + V6_QUOTE];
            msg.fill(0);
            // Pseudo-header: source, destination, length, next header.
            msg[..16].copy_from_slice(&q[24..40]);
            msg[16..32].copy_from_slice(&q[8..24]);
            msg[35] = plen;
            msg[39] = PROTO_ICMPV6;
            msg[40..48].copy_from_slice(&[
                2,
                0,
                0,
                0,
                (m >> 24) as u8,
                (m >> 16) as u8,
                (m >> 8) as u8,
                m as u8,
            ]);
            msg[48..].copy_from_slice(q);
            let c = checksum(msg).to_ne_bytes();
            msg[42..44].copy_from_slice(&c);
            f[ETH_LEN + 40..].copy_from_slice(&msg[40..]);
        }
    }
    stats::global(GlobalCounter::IcmpTooBig);
    xdp_action::XDP_TX
}

/// Ethernet header of an answer sent back where the frame came from
/// (`head` starts with the offending frame's Ethernet header).
#[inline(always)]
fn write_eth(f: &mut [u8], head: &[u8], ether_type: u16) {
    f[..6].copy_from_slice(&head[6..12]);
    f[6..12].copy_from_slice(&head[..6]);
    f[12] = (ether_type >> 8) as u8;
    f[13] = ether_type as u8;
}
