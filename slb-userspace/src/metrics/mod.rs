//! Prometheus metrics on `agent.metrics_listen`.
//!
//! Dataplane and health numbers are encoded at scrape time from the same
//! `status::Snapshot` that `slb status` prints (so the two always agree);
//! what only exists in the agent over time (reload outcomes, health-check
//! latencies, L7 counters) lives in ordinary registered metrics.
mod collector;
mod server;

pub use server::{serve, MetricsError};

use crate::status::Snapshot;
use collector::SnapshotCollector;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub protocol: String,
    pub result: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~8 s: from a local backend's handshake to a slow HTTP check.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 14,
    ))
}

/// Every metric the agent exports.
pub struct Metrics {
    pub registry: Registry,
    /// `slb_config_reloads_total{result="success"|"failure"}`.
    pub reloads: Family<ResultLabel, Counter>,
    /// `slb_health_check_duration_seconds{protocol, result}`.
    pub check_latency: Family<CheckLabels, Histogram, fn() -> Histogram>,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        // Both outcomes from the start, at 0: a series that first appears
        // at 1 shows no `increase()`, so the first refused reload would
        // raise no alert.
        for result in ["success", "failure"] {
            drop(reloads.get_or_create(&ResultLabel {
                result: result.into(),
            }));
        }
        registry.register(
            "slb_config_reloads",
            "Configuration reloads by outcome",
            reloads.clone(),
        );
        let check_latency =
            Family::<CheckLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "slb_health_check_duration_seconds",
            "Duration of health-check probes",
            check_latency.clone(),
        );
        let snapshot = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(SnapshotCollector::new(snapshot.clone())));
        Metrics {
            registry,
            reloads,
            check_latency,
            snapshot,
        }
    }

    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn record_check(&self, protocol: &str, ok: bool, seconds: f64) {
        let labels = CheckLabels {
            protocol: protocol.into(),
            result: if ok { "success" } else { "failure" }.into(),
        };
        self.check_latency.get_or_create(&labels).observe(seconds);
    }

    /// Text exposition of every metric, with the snapshot's numbers.
    pub fn encode(&self, snapshot: Snapshot) -> Result<String, std::fmt::Error> {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Some(snapshot);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackendState, BackendStatus, Counters, GlobalCounters, ListenerStatus};

    fn snapshot() -> Snapshot {
        Snapshot {
            generation: 4,
            flows: 9,
            global: GlobalCounters {
                not_for_us: 11,
                ..Default::default()
            },
            listeners: vec![ListenerStatus {
                name: "web".into(),
                vip: "10.0.0.10".into(),
                port: 80,
                protocol: "tcp".into(),
                scheduler: "wrr".into(),
                mode: "fullnat".into(),
                counters: Counters {
                    conns: 5,
                    packets_in: 50,
                    ..Default::default()
                },
                requests: None,
                backends: vec![BackendStatus {
                    address: "10.0.1.2:8080".into(),
                    weight: 3,
                    backup: false,
                    state: BackendState::Down,
                    since: None,
                    reason: None,
                    active_flows: 2,
                    counters: Counters {
                        conns: 5,
                        ..Default::default()
                    },
                }],
            }],
        }
    }

    #[test]
    fn label_values_are_escaped() {
        // Listener names are free text in the file.
        let mut s = snapshot();
        s.listeners[0].name = "we\"b\\x\ny".into();
        let text = Metrics::new().encode(s).unwrap();
        assert!(
            text.contains(r#"slb_listener_connections_total{listener="we\"b\\x\ny"} 5"#),
            "{text}"
        );
    }

    /// An alert on `increase(slb_config_reloads_total{result="failure"}[..])`
    /// (README, "What to watch") only sees a refused reload if the series
    /// was already there, at 0, before it: one that first appears at 1
    /// shows no increase.
    #[test]
    fn reload_outcomes_are_exported_at_zero_before_any_reload() {
        let text = Metrics::new().encode(snapshot()).unwrap();
        for line in [
            "slb_config_reloads_total{result=\"success\"} 0",
            "slb_config_reloads_total{result=\"failure\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn exposes_the_snapshot_and_agent_metrics() {
        let m = Metrics::new();
        m.record_reload(true);
        m.record_check("tcp", true, 0.003);
        let text = m.encode(snapshot()).unwrap();
        for line in [
            "slb_config_generation 4",
            "slb_flow_table_entries 9",
            "slb_listener_connections_total{listener=\"web\"} 5",
            "slb_listener_packets_total{listener=\"web\",direction=\"in\"} 50",
            "slb_backend_connections_total{listener=\"web\",backend=\"10.0.1.2:8080\"} 5",
            "slb_backend_active_flows{listener=\"web\",backend=\"10.0.1.2:8080\"} 2",
            "slb_backend_weight{listener=\"web\",backend=\"10.0.1.2:8080\"} 3",
            "slb_backend_healthy{listener=\"web\",backend=\"10.0.1.2:8080\",state=\"down\"} 0",
            "slb_dataplane_packets_total{reason=\"not_for_us\"} 11",
            "slb_config_reloads_total{result=\"success\"} 1",
            "slb_health_check_duration_seconds_count{protocol=\"tcp\",result=\"success\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Drops are the listener's: a backend family would be all zeros.
        assert!(text.contains("slb_listener_drops_total{"), "{text}");
        assert!(!text.contains("slb_backend_drops"), "{text}");
    }
}
