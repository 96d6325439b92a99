//! The `[agent]` table, on its own (rules that involve listeners are in
//! `validate.rs`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::defaults as d;
use super::error::Errors;
use super::model::{Agent, XdpMode};
use super::raw::RawAgent;
use super::values::{family, int_in, is_prime, keyword_or, unicast_ip};

/// The agent table as far as it could be validated (`None`: reported error).
#[derive(Debug)]
pub(crate) struct AgentDraft {
    pub interfaces: Option<Vec<String>>,
    pub xdp_mode: Option<XdpMode>,
    /// `Some(empty)` when the key is absent.
    pub probe_source: Option<Vec<IpAddr>>,
    /// The key path of each `probe_source` address (`agent.probe_source`,
    /// or `agent.probe_source[1]` in an array), for errors about it.
    pub probe_source_paths: Vec<String>,
    pub probe_source_given: bool,
    pub local_addresses: Option<Vec<IpAddr>>,
    pub pin_path: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub flow_table_size: Option<u32>,
    pub maglev_table_size: Option<u32>,
    pub control_socket: Option<PathBuf>,
}

impl AgentDraft {
    pub(crate) fn finish(self) -> Option<Agent> {
        Some(Agent {
            interfaces: self.interfaces?,
            xdp_mode: self.xdp_mode?,
            probe_source: self.probe_source?,
            local_addresses: self.local_addresses?,
            pin_path: self.pin_path?,
            metrics_listen: self.metrics_listen?,
            flow_table_size: self.flow_table_size?,
            maglev_table_size: self.maglev_table_size?,
            control_socket: self.control_socket?,
        })
    }
}

pub(crate) fn check(raw: &RawAgent, errs: &mut Errors) -> AgentDraft {
    let interfaces = match &raw.interfaces {
        None => Some(Vec::new()),
        Some(list) => check_interfaces(list, errs),
    };
    let xdp_mode = keyword_or(
        raw.xdp_mode.as_ref(),
        XdpMode::ALL,
        d::XDP_MODE,
        "agent.xdp_mode",
        errs,
    );
    let probe_items = raw
        .probe_source
        .as_ref()
        .map(|p| p.items("agent.probe_source"))
        .unwrap_or_default();
    let probe_source = match &raw.probe_source {
        None => Some(Vec::new()),
        Some(_) => check_probe_source(&probe_items, errs),
    };
    let local_addresses = match &raw.local_addresses {
        None => Some(Vec::new()),
        Some(list) => check_local_addresses(list, errs),
    };
    let pin_path = match &raw.pin_path {
        None => Some(PathBuf::from(d::PIN_PATH)),
        Some(p) if p.starts_with('/') => Some(PathBuf::from(p)),
        Some(p) => {
            errs.push(
                "agent.pin_path",
                format!("must be an absolute path (got \"{p}\")"),
            );
            None
        }
    };
    let metrics_listen = check_socket_addr(
        raw.metrics_listen.as_deref().unwrap_or(d::METRICS_LISTEN),
        "agent.metrics_listen",
        errs,
    );
    let flow_table_size = match raw.flow_table_size {
        None => Some(d::FLOW_TABLE_SIZE),
        Some(n) => int_in(
            n,
            d::FLOW_TABLE_SIZE_MIN.into(),
            d::FLOW_TABLE_SIZE_MAX.into(),
            "agent.flow_table_size",
            errs,
        )
        .and_then(|n| u32::try_from(n).ok()),
    };
    let maglev_table_size = match raw.maglev_table_size {
        None => Some(d::MAGLEV_TABLE_SIZE),
        Some(n) => check_maglev_size(n, errs),
    };
    let control_socket = match &raw.control_socket {
        None => Some(PathBuf::from(d::CONTROL_SOCKET)),
        Some(p) if p.is_empty() || p.len() > d::CONTROL_SOCKET_MAX_LEN => {
            errs.push(
                "agent.control_socket",
                format!(
                    "must be a path of 1..={} bytes (a unix socket address; got {} bytes)",
                    d::CONTROL_SOCKET_MAX_LEN,
                    p.len()
                ),
            );
            None
        }
        // Relative, it would be found relative to each process's working
        // directory: `slb status` run elsewhere would miss the agent.
        Some(p) if !std::path::Path::new(p).is_absolute() => {
            errs.push(
                "agent.control_socket",
                format!("must be an absolute path (got \"{p}\")"),
            );
            None
        }
        Some(p) => Some(PathBuf::from(p)),
    };
    AgentDraft {
        interfaces,
        xdp_mode,
        probe_source,
        probe_source_paths: probe_items.into_iter().map(|(path, _)| path).collect(),
        probe_source_given: raw.probe_source.is_some(),
        local_addresses,
        pin_path,
        metrics_listen,
        flow_table_size,
        maglev_table_size,
        control_socket,
    }
}

/// Linux accepts names of 1..=15 bytes without '/', ':' or whitespace.
fn check_interfaces(list: &[String], errs: &mut Errors) -> Option<Vec<String>> {
    let before = errs.len();
    for (i, name) in list.iter().enumerate() {
        let path = format!("agent.interfaces[{i}]");
        let bad_char = name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if name.is_empty() || name.len() > 15 || bad_char || name == "." || name == ".." {
            errs.push(
                path,
                format!("must be an interface name of 1..=15 characters without '/', ':' or spaces (got \"{name}\")"),
            );
        } else if let Some(j) = list[..i].iter().position(|n| n == name) {
            errs.push(path, format!("\"{name}\" is listed twice (also at [{j}])"));
        }
    }
    (errs.len() == before).then(|| list.to_vec())
}

/// Unicast addresses, at most one per family.
fn check_probe_source(items: &[(String, &str)], errs: &mut Errors) -> Option<Vec<IpAddr>> {
    if items.is_empty() {
        errs.push("agent.probe_source", "must hold at least one address");
        return None;
    }
    let before = errs.len();
    let mut out: Vec<IpAddr> = Vec::new();
    for (path, text) in items {
        if let Some(addr) = unicast_ip(text, path, errs) {
            if let Some(other) = out.iter().find(|a| a.is_ipv4() == addr.is_ipv4()) {
                errs.push(
                    path,
                    format!(
                        "at most one {} address (already have {other})",
                        family(addr)
                    ),
                );
            } else {
                out.push(addr);
            }
        }
    }
    (errs.len() == before).then_some(out)
}

/// Unicast, not loopback, no duplicates, at most `MAX_SNAT_ADDRS` per family.
fn check_local_addresses(list: &[String], errs: &mut Errors) -> Option<Vec<IpAddr>> {
    let before = errs.len();
    let mut out: Vec<IpAddr> = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let path = format!("agent.local_addresses[{i}]");
        if let Some(addr) = unicast_ip(text, &path, errs) {
            if addr.is_loopback() {
                // Backends would answer their own loopback.
                errs.push(
                    path,
                    format!(
                        "{addr} is a loopback address: backends must be able to answer the \
                         FULLNAT source over the network (e.g. 100.64.0.10)"
                    ),
                );
            } else if let Some(j) = out.iter().position(|a| *a == addr) {
                errs.push(path, format!("{addr} is listed twice (also at [{j}])"));
            } else {
                out.push(addr);
            }
        }
    }
    let max = slb_common::limits::MAX_SNAT_ADDRS as usize;
    for v4 in [true, false] {
        let n = out.iter().filter(|a| a.is_ipv4() == v4).count();
        if n > max {
            errs.push(
                "agent.local_addresses",
                format!(
                    "at most {max} {} addresses (got {n})",
                    if v4 { "IPv4" } else { "IPv6" }
                ),
            );
        }
    }
    (errs.len() == before).then_some(out)
}

fn check_socket_addr(text: &str, path: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        _ => {
            errs.push(
                path,
                format!("must be an address and port such as \"127.0.0.1:9470\" or \"[::1]:9470\" (got \"{text}\")"),
            );
            None
        }
    }
}

fn check_maglev_size(n: i64, errs: &mut Errors) -> Option<u32> {
    let ok = u32::try_from(n).ok().filter(|m| {
        (d::MAGLEV_TABLE_SIZE_MIN..=d::MAGLEV_TABLE_SIZE_MAX).contains(m) && is_prime(*m)
    });
    if ok.is_none() {
        errs.push(
            "agent.maglev_table_size",
            format!(
                "must be a prime number in {}..={} such as 65537 (got {n})",
                d::MAGLEV_TABLE_SIZE_MIN,
                d::MAGLEV_TABLE_SIZE_MAX
            ),
        );
    }
    ok
}
