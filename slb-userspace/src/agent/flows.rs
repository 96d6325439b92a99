//! `slb flows`: the connection table as the operator reads it, entries
//! named by listener and backend address.
use super::apply::Applier;
use crate::{
    config::Config,
    dataplane::{Connection, FlowTables},
    status::{FlowFilter, FlowList, RawFlow, Selection},
};
use slb_common::{
    addr::from_addr,
    flow::{FLOW_F_DR, FLOW_F_NAT},
    PROTO_TCP,
};
use std::{collections::BTreeMap, net::SocketAddr};

/// Why `filter` cannot match anything in `cfg`: it names a listener that
/// is not there or has no connection table entries (http/https). Said
/// rather than answered with an empty list, which reads as "no
/// connections" when the name was misspelt.
pub fn filter_error(cfg: &Config, filter: &FlowFilter) -> Option<String> {
    let name = filter.listener.as_deref()?;
    match cfg.listeners.iter().find(|l| l.name == name) {
        Some(l) if l.protocol.is_l4() => None,
        Some(_) => Some(format!(
            "listener {name:?} is an http/https listener: the proxy's connections are not \
             in the connection table"
        )),
        None => {
            let names: Vec<&str> = cfg.l4_listeners().map(|l| l.name.as_str()).collect();
            Some(format!(
                "no listener named {name:?} (tcp/udp listeners: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// What a listing needs of the configuration, owned so that the walk can
/// run off the agent's main loop: each listener id's name and idle
/// timeout (ns).
pub struct ListenerNames(BTreeMap<u32, (String, u64)>);

impl ListenerNames {
    pub fn new(cfg: &Config, applier: &Applier) -> ListenerNames {
        ListenerNames(
            applier
                .listeners_by_id(cfg)
                .into_iter()
                .map(|(id, l)| (id, (l.name.clone(), l.idle_timeout.as_nanos() as u64)))
                .collect(),
        )
    }
}

/// Lists the entries `filter` asks for; each entry is filtered as the
/// walk meets it (see `Selection`).
pub fn list(tables: &FlowTables, names: &ListenerNames, filter: &FlowFilter) -> FlowList {
    let mut selection = Selection::new(filter);
    tables.connections(
        |id| names.0.get(&id).map(|(_, idle)| *idle),
        |c| {
            if let Some(f) = raw_flow(&c, names) {
                selection.offer(f);
            }
        },
    );
    selection.finish()
}

fn socket(addr: &slb_common::Addr, port_be: u16) -> SocketAddr {
    SocketAddr::new(from_addr(addr), u16::from_be(port_be))
}

/// `None` for an entry of a listener no longer configured (its flows are
/// scheduled afresh, if at all, by whatever listener now has the VIP).
fn raw_flow(c: &Connection, names: &ListenerNames) -> Option<RawFlow> {
    let (name, idle_timeout_ns) = names.0.get(&c.flow.listener_id)?;
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
        listener: name.clone(),
        proto_tcp: k.proto == PROTO_TCP,
        client,
        vip: socket(&k.dst, k.dport),
        source: (mode == "fullnat").then(|| socket(&f.snat_addr, f.snat_port)),
        backend,
        mode,
        flags: f.flags,
        idle_ns: c.idle_ns,
        idle_timeout_ns: *idle_timeout_ns,
        backend_gone: c.backend.is_none(),
    })
}

fn unspecified_like(a: SocketAddr) -> std::net::IpAddr {
    match a {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[agent]
probe_source = "100.64.0.1"
local_addresses = ["100.64.0.10"]

[[listener]]
name = "web"
vip = "10.0.0.10"
port = 80
[[listener.backend]]
address = "10.0.1.1"
port = 8080

[[listener]]
name = "dns"
vip = "10.0.0.10"
port = 53
protocol = "udp"
[[listener.backend]]
address = "10.0.1.1"
port = 53

[[listener]]
name = "site"
vip = "127.0.0.1"
port = 8000
protocol = "http"
health_check = { enabled = false }
[[listener.backend]]
address = "127.0.0.1"
port = 9000
"#;

    fn by_listener(name: &str) -> FlowFilter {
        FlowFilter {
            listener: Some(name.into()),
            ..FlowFilter::default()
        }
    }

    #[test]
    fn a_filter_naming_no_l4_listener_is_an_error() {
        let cfg = crate::config::parse(CFG).unwrap();
        assert_eq!(filter_error(&cfg, &FlowFilter::default()), None);
        assert_eq!(filter_error(&cfg, &by_listener("dns")), None);
        let e = filter_error(&cfg, &by_listener("wbe")).unwrap();
        assert!(e.contains("\"wbe\"") && e.contains("web, dns"), "{e}");
        let e = filter_error(&cfg, &by_listener("site")).unwrap();
        assert!(e.contains("http/https"), "{e}");
    }
}
