//! Builds the status snapshot from configuration, ids, health and the
//! dataplane's counters.
use crate::{
    config::{Config, Forwarding},
    dataplane::{Dataplane, DataplaneError},
    health::TargetStatus,
    planner::{BackendKey, Ids},
    status::{BackendState, BackendStatus, Counters, GlobalCounters, ListenerStatus, Snapshot},
};
use slb_common::Stats;
use std::{collections::BTreeMap, time::UNIX_EPOCH};

fn counters(s: &Stats) -> Counters {
    Counters {
        conns: s.conns,
        packets_in: s.packets_in,
        packets_out: s.packets_out,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        drop_no_backend: s.drop_no_backend,
        drop_acl: s.drop_acl,
        drop_no_port: s.drop_no_port,
    }
}

pub fn build(
    cfg: &Config,
    ids: &Ids,
    health: &[TargetStatus],
    dp: &Dataplane,
    generation: u64,
) -> Result<Snapshot, DataplaneError> {
    let health: BTreeMap<&BackendKey, &TargetStatus> = health.iter().map(|t| (&t.key, t)).collect();
    let idle: BTreeMap<u32, u64> = cfg
        .l4_listeners()
        .filter_map(|l| Some((ids.listener(&l.name)?, l.idle_timeout.as_nanos() as u64)))
        .collect();
    let active = dp.active_flows(|id| idle.get(&id).copied());
    let mut listeners = Vec::new();
    for l in cfg.l4_listeners() {
        let Some(lid) = ids.listener(&l.name) else {
            continue;
        };
        let mut backends = Vec::new();
        for b in &l.backends {
            let key = BackendKey {
                listener: l.name.clone(),
                addr: b.socket_addr(),
            };
            let Some((bid, _)) = ids.backend(&key) else {
                continue;
            };
            let h = health.get(&key);
            let down = h.is_some_and(|h| !h.up);
            let state = if down {
                BackendState::Down
            } else if b.weight == 0 {
                BackendState::Drained
            } else {
                BackendState::Up
            };
            backends.push(BackendStatus {
                address: b.socket_addr().to_string(),
                weight: b.weight,
                state,
                since: h
                    .and_then(|h| h.last_change)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                reason: h.and_then(|h| {
                    let reason = h.last_reason.clone()?;
                    let (n, of) = if h.up {
                        (
                            h.consecutive_ok,
                            l.health_check.as_ref().map_or(1, |c| c.healthy_threshold),
                        )
                    } else {
                        (
                            h.consecutive_fail,
                            l.health_check.as_ref().map_or(1, |c| c.unhealthy_threshold),
                        )
                    };
                    Some(format!("{reason} ({}/{of})", n.min(of)))
                }),
                active_flows: active.get(&bid).copied().unwrap_or(0),
                counters: counters(&dp.backend_stats(bid)?),
            });
        }
        listeners.push(ListenerStatus {
            name: l.name.clone(),
            vip: l.vip.to_string(),
            port: l.port,
            protocol: l.protocol.as_str().to_owned(),
            scheduler: l.scheduler.as_str().to_owned(),
            mode: l
                .forwarding
                .unwrap_or(Forwarding::FullNat)
                .as_str()
                .to_owned(),
            counters: counters(&dp.listener_stats(lid)?),
            backends,
        });
    }
    let g = dp.counters()?;
    let (flows, _) = dp.flow_entries();
    Ok(Snapshot {
        generation,
        listeners,
        global: GlobalCounters {
            not_for_us: g.not_for_us,
            parse_errors: g.parse_errors,
            no_backend: g.no_backend,
            flow_misses: g.flow_misses,
            fib_pass: g.fib_pass,
            fib_drop: g.fib_drop,
            unsupported: g.unsupported,
        },
        flows: flows as u64,
    })
}
