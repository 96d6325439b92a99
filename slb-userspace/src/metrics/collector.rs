//! Encodes a status snapshot as metric families at scrape time.
use crate::status::{BackendState, Counters, Snapshot};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct SnapshotCollector {
    snapshot: Arc<Mutex<Option<Snapshot>>>,
}

impl SnapshotCollector {
    pub fn new(snapshot: Arc<Mutex<Option<Snapshot>>>) -> Self {
        SnapshotCollector { snapshot }
    }
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One metric family: name, help, type and its labelled values.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels<'_>, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut d = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let m = d.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(m)?,
            _ => ConstGauge::new(*v as i64).encode(m)?,
        }
    }
    Ok(())
}

/// The traffic counters of a listener or backend, one family each; drops
/// only where asked (a listener's: see `encode`).
fn traffic<'a>(
    rows: &mut [Vec<(Labels<'a>, u64)>; 5],
    labels: &Labels<'a>,
    c: &Counters,
    drops: bool,
) {
    let with = |extra: (&'static str, &'a str)| {
        let mut l = labels.clone();
        l.push(extra);
        l
    };
    rows[0].push((labels.clone(), c.conns));
    rows[1].push((with(("direction", "in")), c.packets_in));
    rows[1].push((with(("direction", "out")), c.packets_out));
    rows[2].push((with(("direction", "in")), c.bytes_in));
    rows[2].push((with(("direction", "out")), c.bytes_out));
    if !drops {
        return;
    }
    rows[3].push((with(("reason", "no_backend")), c.drop_no_backend));
    rows[3].push((with(("reason", "acl")), c.drop_acl));
    rows[3].push((with(("reason", "no_source_port")), c.drop_no_port));
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let guard = self.snapshot.lock().map_err(|_| std::fmt::Error)?;
        let Some(s) = guard.as_ref() else {
            return Ok(());
        };
        family(
            &mut enc,
            "slb_config_generation",
            "Number of configurations applied",
            MetricType::Gauge,
            &[(vec![], s.generation)],
        )?;

        let mut l_rows: [Vec<(Labels, u64)>; 5] = Default::default();
        let mut b_rows: [Vec<(Labels, u64)>; 5] = Default::default();
        let mut active = Vec::new();
        let mut up = Vec::new();
        let mut weight = Vec::new();
        for l in &s.listeners {
            let ll: Labels = vec![("listener", l.name.as_str())];
            traffic(&mut l_rows, &ll, &l.counters, true);
            for b in &l.backends {
                let bl: Labels = vec![
                    ("listener", l.name.as_str()),
                    ("backend", b.address.as_str()),
                ];
                // Drops happen before a flow has a backend (ACL, none up,
                // no source port for it): counted per listener only.
                traffic(&mut b_rows, &bl, &b.counters, false);
                active.push((bl.clone(), b.active_flows));
                weight.push((bl.clone(), u64::from(b.weight)));
                let mut sl = bl.clone();
                sl.push(("state", b.state.as_str()));
                up.push((sl, u64::from(b.state != BackendState::Down)));
            }
        }
        let names = ["connections", "packets", "bytes", "drops"];
        let helps = [
            "New connections (flows) scheduled",
            "Packets forwarded",
            "Bytes forwarded",
            "New flows dropped, by reason",
        ];
        for i in 0..4 {
            family(
                &mut enc,
                &format!("slb_listener_{}", names[i]),
                helps[i],
                MetricType::Counter,
                &l_rows[i],
            )?;
        }
        // No drops family for backends (see `traffic`).
        for i in 0..3 {
            family(
                &mut enc,
                &format!("slb_backend_{}", names[i]),
                helps[i],
                MetricType::Counter,
                &b_rows[i],
            )?;
        }
        family(
            &mut enc,
            "slb_backend_active_flows",
            "Flows currently pinned to the backend",
            MetricType::Gauge,
            &active,
        )?;
        family(
            &mut enc,
            "slb_backend_weight",
            "Configured weight",
            MetricType::Gauge,
            &weight,
        )?;
        family(
            &mut enc,
            "slb_backend_healthy",
            "1 unless health checks report the backend down (state: up, down, drained, standby; a weight-0 backend is reported drained, whatever its checks say)",
            MetricType::Gauge,
            &up,
        )?;
        let g = &s.global;
        let global: Vec<(Labels, u64)> = vec![
            (vec![("reason", "not_for_us")], g.not_for_us),
            (vec![("reason", "parse_error")], g.parse_errors),
            (vec![("reason", "no_backend")], g.no_backend),
            (vec![("reason", "flow_miss")], g.flow_misses),
            (vec![("reason", "via_kernel_no_neighbour")], g.fib_pass),
            (vec![("reason", "no_route")], g.fib_drop),
            (vec![("reason", "unsupported")], g.unsupported),
            (vec![("reason", "icmp_translated")], g.icmp_translated),
            (vec![("reason", "icmp_too_big_sent")], g.icmp_too_big),
            (vec![("reason", "too_big_dropped")], g.too_big_drops),
        ];
        family(
            &mut enc,
            "slb_dataplane_packets",
            "Dataplane events by kind",
            MetricType::Counter,
            &global,
        )?;
        family(
            &mut enc,
            "slb_flow_table_entries",
            "Entries in the connection table",
            MetricType::Gauge,
            &[(vec![], s.flows)],
        )?;
        Ok(())
    }
}
