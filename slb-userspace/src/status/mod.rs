//! What `slb status` and `/metrics` show: one snapshot type, built by the
//! agent from the configuration, health and dataplane counters, so both
//! views always report the same numbers.
mod flows;
mod render;

pub use flows::{
    parse_address, render_flows, select, BackendMatch, FlowEntry, FlowFilter, FlowList, RawFlow,
    Selection, DEFAULT_LIMIT,
};
pub use render::render_table;

use serde::{Deserialize, Serialize};

/// Health of a backend as an operator reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    Up,
    Down,
    /// Weight 0: no new flows by configuration, not a failure.
    Drained,
    /// A backup while other backends serve: healthy, no new flows.
    Standby,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Drained => "drained",
            BackendState::Standby => "standby",
        }
    }
}

/// Dataplane counters of a listener or backend (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub conns: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub drop_no_backend: u64,
    pub drop_acl: u64,
    pub drop_no_port: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: String,
    pub weight: u32,
    /// Configured as a backup (`backup = true`).
    #[serde(default)]
    pub backup: bool,
    pub state: BackendState,
    /// Seconds since the epoch of the last health change, if any.
    pub since: Option<u64>,
    /// Why the health state is what it is (`connect refused (3/3)`).
    pub reason: Option<String>,
    pub active_flows: u64,
    pub counters: Counters,
}

/// Requests an http/https listener answered, by status class (the
/// `slb_l7_requests_total` series), and connections its ACL refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    #[serde(rename = "1xx")]
    pub class_1xx: u64,
    #[serde(rename = "2xx")]
    pub class_2xx: u64,
    #[serde(rename = "3xx")]
    pub class_3xx: u64,
    #[serde(rename = "4xx")]
    pub class_4xx: u64,
    #[serde(rename = "5xx")]
    pub class_5xx: u64,
    pub acl_refused: u64,
    /// Client TLS handshakes that failed or timed out (https listeners).
    #[serde(default)]
    pub tls_failed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub protocol: String,
    pub scheduler: String,
    /// `fullnat`, `nat`, `dr` (L4) or `proxy` (http/https).
    pub mode: String,
    pub counters: Counters,
    /// http/https listeners: what the proxy answered (their `counters`,
    /// the dataplane's, stay zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestCounts>,
    pub backends: Vec<BackendStatus>,
}

/// Global dataplane counters (SPEC §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalCounters {
    pub not_for_us: u64,
    pub parse_errors: u64,
    pub no_backend: u64,
    pub flow_misses: u64,
    pub fib_pass: u64,
    pub fib_drop: u64,
    pub unsupported: u64,
    pub icmp_translated: u64,
    pub icmp_too_big: u64,
    pub too_big_drops: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Incremented by every applied configuration (start = 1).
    pub generation: u64,
    pub listeners: Vec<ListenerStatus>,
    pub global: GlobalCounters,
    /// Entries in the connection table.
    pub flows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }

    /// Scripts read `slb status --json` by field name: the README lists
    /// every one of them.
    #[test]
    fn the_readme_names_every_json_field() {
        let s = Snapshot {
            generation: 1,
            flows: 0,
            global: GlobalCounters::default(),
            listeners: vec![ListenerStatus {
                name: "www".into(),
                vip: "10.0.0.10".into(),
                port: 80,
                protocol: "http".into(),
                scheduler: "wrr".into(),
                mode: "proxy".into(),
                counters: Counters::default(),
                requests: Some(RequestCounts::default()),
                backends: vec![BackendStatus {
                    address: "10.0.1.2:8080".into(),
                    weight: 1,
                    backup: false,
                    state: BackendState::Up,
                    since: Some(1),
                    reason: Some("ok".into()),
                    active_flows: 0,
                    counters: Counters::default(),
                }],
            }],
        };
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Status and metrics").unwrap()..];
        let mut fields = Vec::new();
        keys(&serde_json::to_value(&s).unwrap(), &mut fields);
        let missing: Vec<&String> = fields
            .iter()
            .filter(|f| !section.contains(&format!("`{f}`")))
            .collect();
        assert!(missing.is_empty(), "not in the README: {missing:?}");
    }
}
