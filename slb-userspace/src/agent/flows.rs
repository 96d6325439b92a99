//! `slb flows`: the connection table as the operator reads it, entries
//! named by listener and backend address.
use super::apply::Applier;
use crate::{
    config::{Config, Listener},
    dataplane::{Connection, Dataplane},
    status::{self, FlowFilter, FlowList, RawFlow},
};
use slb_common::{
    addr::from_addr,
    flow::{FLOW_F_DR, FLOW_F_NAT},
    PROTO_TCP,
};
use std::{collections::BTreeMap, net::SocketAddr};

/// Lists the entries `filter` asks for.
pub fn list(cfg: &Config, dp: &Dataplane, applier: &Applier, filter: &FlowFilter) -> FlowList {
    let listeners = applier.listeners_by_id(cfg);
    let mut raw = Vec::new();
    dp.connections(
        |id| listeners.get(&id).map(|l| l.idle_timeout.as_nanos() as u64),
        |c| raw.extend(raw_flow(&c, &listeners)),
    );
    status::select(filter, raw)
}

fn socket(addr: &slb_common::Addr, port_be: u16) -> SocketAddr {
    SocketAddr::new(from_addr(addr), u16::from_be(port_be))
}

/// `None` for an entry of a listener no longer configured (its flows are
/// scheduled afresh, if at all, by whatever listener now has the VIP).
fn raw_flow(c: &Connection, listeners: &BTreeMap<u32, &Listener>) -> Option<RawFlow> {
    let l = listeners.get(&c.flow.listener_id)?;
    let (k, f) = (&c.key, &c.flow);
    let mode = if f.flags & FLOW_F_DR != 0 {
        "dr"
    } else if f.flags & FLOW_F_NAT != 0 {
        "nat"
    } else {
        "fullnat"
    };
    let client = socket(&k.src, k.sport);
    // A gone backend's address is not known any more (its slot holds
    // another): shown as unspecified, and only with `--all`.
    let backend = c.backend.map_or_else(
        || SocketAddr::new(unspecified_like(client), 0),
        |b| socket(&b.addr, b.port),
    );
    Some(RawFlow {
        listener: l.name.clone(),
        proto_tcp: k.proto == PROTO_TCP,
        client,
        vip: socket(&k.dst, k.dport),
        source: (mode == "fullnat").then(|| socket(&f.snat_addr, f.snat_port)),
        backend,
        mode,
        flags: f.flags,
        idle_ns: c.idle_ns,
        idle_timeout_ns: l.idle_timeout.as_nanos() as u64,
        backend_gone: c.backend.is_none(),
    })
}

fn unspecified_like(a: SocketAddr) -> std::net::IpAddr {
    match a {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}
