//! Builds the status snapshot from configuration, ids, health and the
//! dataplane's counters.
use super::apply::Applier;
use crate::{
    config::{Config, Forwarding, Listener},
    dataplane::{Dataplane, DataplaneError, FlowTables},
    health::TargetStatus,
    l7::L7Metrics,
    planner::{self, BackendKey, BackendSlot, Health},
    status::{
        BackendState, BackendStatus, Counters, GlobalCounters, ListenerStatus, RequestCounts,
        Snapshot,
    },
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

/// Whether `b` is a backup standing by: in each list of the listener that
/// has it (its backends, each group of an http/https listener) it is a
/// backup and another backend serves.
fn standing_by(l: &Listener, b: &crate::config::Backend, down: &Health) -> bool {
    let groups =
        l.l7.iter()
            .flat_map(|s| s.groups.iter().map(|g| &g.backends[..]));
    let mut backup = false;
    for list in std::iter::once(&l.backends[..]).chain(groups) {
        for o in list.iter().filter(|o| o.socket_addr() == b.socket_addr()) {
            if !o.backup || planner::backups_serve(&l.name, list, down) {
                return false;
            }
            backup = true;
        }
    }
    backup
}

/// Health state, weight and reason of one backend.
fn backend_health(
    l: &Listener,
    b: &crate::config::Backend,
    health: &BTreeMap<&BackendKey, &TargetStatus>,
    down: &Health,
) -> (BackendState, Option<u64>, Option<String>) {
    let key = BackendKey {
        listener: l.name.clone(),
        addr: b.socket_addr(),
    };
    let h = health.get(&key);
    // Weight 0 first: a drained backend is reported as drained, not as
    // failed (SPEC §4), also when its checks fail, as they do once its
    // service is stopped for the maintenance it was drained for. The
    // check's last change stays in `reason`.
    let state = if b.weight == 0 {
        BackendState::Drained
    } else if h.is_some_and(|h| !h.up) {
        BackendState::Down
    } else if standing_by(l, b, down) {
        BackendState::Standby
    } else {
        BackendState::Up
    };
    let since = h
        .and_then(|h| h.last_change)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    // The change as it was logged (`connect refused (3/3)`, `(1/1)` for a
    // first decision), not the current run of results: that one keeps
    // counting while the state stays, and restarts with every other result.
    let reason = h.and_then(|h| {
        let reason = h.last_reason.as_ref()?;
        Some(match h.last_change_run {
            Some((n, of)) => format!("{reason} ({n}/{of})"),
            None => reason.clone(),
        })
    });
    (state, since, reason)
}

fn listener_status(
    l: &Listener,
    mode: &str,
    counters: Counters,
    requests: Option<RequestCounts>,
    backends: Vec<BackendStatus>,
) -> ListenerStatus {
    ListenerStatus {
        name: l.name.clone(),
        vip: l.vip.to_string(),
        port: l.port,
        protocol: l.protocol.as_str().to_owned(),
        scheduler: match &l.l7 {
            Some(l7) => l7.scheduler.as_str().to_owned(),
            None => l.scheduler.as_str().to_owned(),
        },
        mode: mode.to_owned(),
        counters,
        requests,
        backends,
    }
}

/// What a snapshot still needs from the connection table: its active-flow
/// counts and number of entries. Filled by a walk of the table that runs
/// off the agent's main loop ([`TableCounts::fill`]).
pub struct TableCounts {
    /// Idle timeout (ns) of each listener id.
    idle: BTreeMap<u32, u64>,
    /// Listener and backend index in the snapshot, and the backend's id.
    slots: Vec<(usize, usize, u32)>,
}

impl TableCounts {
    pub fn fill(&self, snapshot: &mut Snapshot, tables: &FlowTables) {
        let census = tables.census(|id| self.idle.get(&id).copied());
        for &(l, b, bid) in &self.slots {
            if let Some(b) = snapshot
                .listeners
                .get_mut(l)
                .and_then(|l| l.backends.get_mut(b))
            {
                b.active_flows = census.active.get(&bid).copied().unwrap_or(0);
            }
        }
        snapshot.flows = census.entries;
    }
}

/// The snapshot: L4 listeners with dataplane counters (`slb run`), then
/// http/https listeners with their backends' health and the proxy's
/// request counts (`l7`: the proxy's metrics). Active flows and the
/// number of entries are left at 0 for [`TableCounts::fill`] (`None`
/// without a dataplane).
pub fn build(
    cfg: &Config,
    dataplane: Option<&(Dataplane, Applier)>,
    l7: &L7Metrics,
    health: &[TargetStatus],
    generation: u64,
) -> Result<(Snapshot, Option<TableCounts>), DataplaneError> {
    let health: BTreeMap<&BackendKey, &TargetStatus> = health.iter().map(|t| (&t.key, t)).collect();
    let down = Health {
        down: health
            .values()
            .filter(|t| !t.up)
            .map(|t| t.key.clone())
            .collect(),
    };
    let mut listeners = Vec::new();
    let mut global = GlobalCounters::default();
    let mut table = None;
    if let Some((dp, applier)) = dataplane {
        let ids = &applier.ids;
        let mut counts = TableCounts {
            idle: applier
                .listeners_by_id(cfg)
                .into_iter()
                .map(|(id, l)| (id, l.idle_timeout.as_nanos() as u64))
                .collect(),
            slots: Vec::new(),
        };
        for l in cfg.l4_listeners() {
            let service = planner::vip_key(l);
            let Some(lid) = ids.listener(&service) else {
                continue;
            };
            let mut backends = Vec::new();
            for b in &l.backends {
                let slot = BackendSlot {
                    service,
                    addr: b.socket_addr(),
                };
                let Some((bid, _)) = ids.backend(&slot) else {
                    continue;
                };
                let (state, since, reason) = backend_health(l, b, &health, &down);
                counts.slots.push((listeners.len(), backends.len(), bid));
                backends.push(BackendStatus {
                    address: b.socket_addr().to_string(),
                    weight: b.weight,
                    backup: b.backup,
                    state,
                    since,
                    reason,
                    active_flows: 0,
                    counters: counters(&dp.backend_stats(bid)?),
                });
            }
            let mode = l.forwarding.unwrap_or(Forwarding::FullNat).as_str();
            listeners.push(listener_status(
                l,
                mode,
                counters(&dp.listener_stats(lid)?),
                None,
                backends,
            ));
        }
        global = dp.counters()?;
        table = Some(counts);
    }
    for l in cfg.l7_listeners() {
        let backends = l
            .all_backends()
            .iter()
            .map(|b| {
                let (state, since, reason) = backend_health(l, b, &health, &down);
                BackendStatus {
                    address: b.socket_addr().to_string(),
                    weight: b.weight,
                    backup: b.backup,
                    state,
                    since,
                    reason,
                    active_flows: 0,
                    counters: Counters::default(),
                }
            })
            .collect();
        let requests = Some(l7.counts(&l.name));
        listeners.push(listener_status(
            l,
            "proxy",
            Counters::default(),
            requests,
            backends,
        ));
    }
    let snapshot = Snapshot {
        generation,
        listeners,
        global,
        flows: 0,
    };
    Ok((snapshot, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckProtocol;

    /// `standby`: a backup while another backend of each of its lists
    /// serves; an address that is a primary in some group is never one.
    #[test]
    fn standby_is_a_backup_while_others_serve() {
        let cfg = crate::config::parse(
            "[agent]\nprobe_source = \"100.64.0.1\"\n\
             [[listener]]\nname = \"www\"\nvip = \"127.0.0.1\"\nport = 8080\nprotocol = \"http\"\n\
             [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 80\n\
             [[listener.backend]]\naddress = \"10.0.1.2\"\nport = 80\nbackup = true\n\
             [[listener.group]]\nname = \"api\"\n\
             [[listener.group.backend]]\naddress = \"10.0.1.3\"\nport = 80\nbackup = true\n\
             [[listener.group.backend]]\naddress = \"10.0.1.2\"\nport = 80\n",
        )
        .unwrap();
        let l = &cfg.listeners[0];
        let down = |addrs: &[&str]| Health {
            down: addrs
                .iter()
                .map(|a| BackendKey {
                    listener: "www".into(),
                    addr: a.parse().unwrap(),
                })
                .collect(),
        };
        let all = l.all_backends();
        let standby =
            |h: &Health| -> Vec<bool> { all.iter().map(|b| standing_by(l, b, h)).collect() };
        // 10.0.1.2 is a backup of the default group but serves "api".
        assert_eq!(standby(&down(&[])), [false, false, true]);
        assert_eq!(standby(&down(&["10.0.1.2:80"])), [false, false, false]);
        let l4 = crate::config::parse(
            "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = \"100.64.0.1\"\n\
             local_addresses = [\"100.64.0.10\"]\n\
             [[listener]]\nname = \"www\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"tcp\"\n\
             [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 80\n\
             [[listener.backend]]\naddress = \"10.0.1.2\"\nport = 80\nbackup = true\n",
        )
        .unwrap();
        let l = &l4.listeners[0];
        let b = &l.backends[1];
        assert!(standing_by(l, b, &down(&[])));
        assert!(!standing_by(l, b, &down(&["10.0.1.1:80"])));
    }

    /// A TCP check of `key` that went down after `run` refused connects
    /// and has failed `fails` times in a row since.
    fn refused(key: &BackendKey, run: (u32, u32), fails: u32) -> TargetStatus {
        TargetStatus {
            key: key.clone(),
            protocol: CheckProtocol::Tcp,
            up: false,
            confirmed: true,
            last_change: None,
            last_reason: Some("connect refused".into()),
            last_change_run: Some(run),
            last_result: Some("connect refused".into()),
            last_probe: None,
            last_latency: None,
            consecutive_ok: 0,
            consecutive_fail: fails,
        }
    }

    #[test]
    fn the_reason_is_the_change_as_logged() {
        let cfg = crate::config::parse(
            "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = \"100.64.0.1\"\n\
             local_addresses = [\"100.64.0.10\"]\n\
             [[listener]]\nname = \"web\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"tcp\"\n\
             health_check = { unhealthy_threshold = 2 }\n\
             [[listener.backend]]\naddress = \"10.0.1.2\"\nport = 8080\n",
        )
        .unwrap();
        let (l, b) = (&cfg.listeners[0], &cfg.listeners[0].backends[0]);
        let key = BackendKey {
            listener: "web".into(),
            addr: b.socket_addr(),
        };
        // Down at its first probe, and still failing since.
        let status = refused(&key, (1, 1), 5);
        let health = BTreeMap::from([(&key, &status)]);
        let (state, _, reason) = backend_health(l, b, &health, &Health::default());
        assert_eq!(state, BackendState::Down);
        assert_eq!(reason.as_deref(), Some("connect refused (1/1)"));
    }

    /// SPEC §4: a weight-0 backend is reported as drained, not as failed,
    /// also while its checks fail (an operator drains a backend, then
    /// stops its service for maintenance).
    #[test]
    fn a_failing_weight_zero_backend_is_drained_not_down() {
        let cfg = crate::config::parse(
            "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = \"100.64.0.1\"\n\
             local_addresses = [\"100.64.0.10\"]\n\
             [[listener]]\nname = \"web\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"tcp\"\n\
             [[listener.backend]]\naddress = \"10.0.1.2\"\nport = 8080\nweight = 0\n",
        )
        .unwrap();
        let (l, b) = (&cfg.listeners[0], &cfg.listeners[0].backends[0]);
        let key = BackendKey {
            listener: "web".into(),
            addr: b.socket_addr(),
        };
        let status = refused(&key, (3, 3), 3);
        let health = BTreeMap::from([(&key, &status)]);
        let down = Health {
            down: [key.clone()].into(),
        };
        let (state, _, reason) = backend_health(l, b, &health, &down);
        assert_eq!(state, BackendState::Drained);
        // The check's verdict stays visible (JSON), for when it is undrained.
        assert_eq!(reason.as_deref(), Some("connect refused (3/3)"));
    }
}
