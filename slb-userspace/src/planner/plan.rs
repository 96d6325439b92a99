//! The desired contents of the dataplane maps.
use super::{
    dests::DestTableFull,
    ids::{BackendKey, BackendSlot, IdError, Ids},
    tables::{Candidate, Table, TableCache},
};
use crate::config::{AclMode, Config, Forwarding, Protocol, Scheduler};
use crate::dataplane::AclEntry;
use crate::sched::SchedError;
use ipnet::IpNet;
use slb_common::{
    addr::to_addr,
    listener::{
        ACL_ALLOW, ACL_DENY, ACL_NONE, BACKEND_F_DOWN, DEST_NAT_BACKEND, DEST_SNAT, DEST_VIP,
        MODE_DR, MODE_FULLNAT, MODE_NAT, SCHED_MAGLEV, SCHED_SH, SCHED_WLC, SCHED_WRR,
    },
    Addr, Backend, DestSlot, Listener, Settings, VipKey, PROTO_TCP, PROTO_UDP,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// Backends that health checks currently hold down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    pub down: BTreeSet<BackendKey>,
}

impl Health {
    pub fn is_up(&self, key: &BackendKey) -> bool {
        !self.down.contains(key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendPlan {
    pub key: BackendKey,
    pub id: u32,
    pub entry: Backend,
    pub weight: u32,
    pub up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerPlan {
    pub name: String,
    pub id: u32,
    pub key: VipKey,
    /// `ring_base` is left 0: it depends on which table half is live.
    pub entry: Listener,
    /// Shared with the table cache and the applier's record of what each
    /// half holds: a plan copies no table (64 listeners of 1000003 slots
    /// are 256 MB).
    pub table: Table,
    pub backends: Vec<BackendPlan>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub listeners: Vec<ListenerPlan>,
    pub dests: BTreeMap<Addr, u32>,
    pub snat_v4: Vec<Addr>,
    pub snat_v6: Vec<Addr>,
    pub settings: Settings,
    /// ACL entries of every listener with an ACL.
    pub acl: BTreeSet<AclEntry>,
    /// `dests` placed in the program's destination table.
    pub dest_table: Vec<DestSlot>,
}

/// The ACL trie entry of a CIDR: prefix length and network on the
/// IPv4-mapped form (an IPv4 /n is a /96+n).
pub fn acl_entry(listener_id: u32, net: &IpNet) -> AclEntry {
    let len = match net {
        IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    };
    (listener_id, len, to_addr(net.network()))
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Ids(#[from] IdError),
    #[error(transparent)]
    Dests(#[from] DestTableFull),
    #[error("listener {listener}: {source}")]
    Table {
        listener: String,
        #[source]
        source: SchedError,
    },
}

fn proto_number(p: Protocol) -> u8 {
    match p.transport() {
        Protocol::Udp => PROTO_UDP,
        _ => PROTO_TCP,
    }
}

fn mode(f: Option<Forwarding>) -> u8 {
    match f {
        Some(Forwarding::Nat) => MODE_NAT,
        Some(Forwarding::Dr) => MODE_DR,
        Some(Forwarding::FullNat) | None => MODE_FULLNAT,
    }
}

fn scheduler(s: Scheduler) -> u8 {
    match s {
        Scheduler::Maglev => SCHED_MAGLEV,
        Scheduler::Wrr => SCHED_WRR,
        Scheduler::Wlc => SCHED_WLC,
        Scheduler::Sh => SCHED_SH,
    }
}

/// Whole seconds for the dataplane, rounded up (`"1500ms"` is 2 s, not 1:
/// a timeout is never shortened), at least 1.
fn secs(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The `LISTENERS` key of an L4 listener.
pub fn vip_key(l: &crate::config::Listener) -> VipKey {
    VipKey {
        addr: to_addr(l.vip),
        port: l.port.to_be(),
        proto: proto_number(l.protocol),
        _pad: 0,
    }
}

/// Computes the map contents for `cfg` with `health`, assigning stable ids.
/// A configuration that cannot be planned changes no id: planning the
/// running one again must give every listener and backend the id and
/// generation it has (a new one would re-schedule its flows and zero its
/// counters).
pub fn plan(cfg: &Config, ids: &mut Ids, health: &Health) -> Result<Plan, PlanError> {
    plan_cached(cfg, ids, health, &TableCache::default()).map(|(plan, _)| plan)
}

/// [`plan`], taking the lookup tables of listeners whose table input did
/// not change from `tables` (the cache of the previous plan); also
/// returns the cache of this plan.
pub fn plan_cached(
    cfg: &Config,
    ids: &mut Ids,
    health: &Health,
    tables: &TableCache,
) -> Result<(Plan, TableCache), PlanError> {
    let mut next = ids.clone();
    let mut cache = TableCache::default();
    let out = plan_with(cfg, &mut next, health, tables, &mut cache)?;
    *ids = next;
    Ok((out, cache))
}

fn plan_with(
    cfg: &Config,
    ids: &mut Ids,
    health: &Health,
    tables: &TableCache,
    cache: &mut TableCache,
) -> Result<Plan, PlanError> {
    let l4: Vec<_> = cfg
        .listeners
        .iter()
        .filter(|l| l.protocol.is_l4())
        .collect();
    let services: Vec<VipKey> = l4.iter().map(|l| vip_key(l)).collect();
    let slots: Vec<BackendSlot> = l4
        .iter()
        .flat_map(|l| {
            l.backends.iter().map(|b| BackendSlot {
                service: vip_key(l),
                addr: b.socket_addr(),
            })
        })
        .collect();
    ids.assign(&services, &slots)?;

    let ring_size = cfg.agent.maglev_table_size;
    let mut out = Plan::default();
    for l in l4 {
        // Invariant: `assign` just gave every listener and backend an id.
        let service = vip_key(l);
        let Some(id) = ids.listener(&service) else {
            continue;
        };
        let mut backends = Vec::new();
        let mut live = Vec::new();
        let backups_serve = backups_serve(&l.name, &l.backends, health);
        for b in &l.backends {
            let key = BackendKey {
                listener: l.name.clone(),
                addr: b.socket_addr(),
            };
            let slot = BackendSlot {
                service,
                addr: b.socket_addr(),
            };
            let Some((bid, generation)) = ids.backend(&slot) else {
                continue;
            };
            let up = health.is_up(&key);
            // A backup standing by is drained in the dataplane too: no
            // persistence pin or `wlc` pick may reach it, while the flows
            // it got during an outage go on.
            let weight = if b.backup && !backups_serve {
                0
            } else {
                b.weight
            };
            if up && weight > 0 {
                live.push(Candidate {
                    id: bid,
                    key: b.socket_addr().to_string(),
                    weight: b.weight,
                });
            }
            backends.push(BackendPlan {
                entry: Backend {
                    addr: to_addr(b.address),
                    port: b.port.to_be(),
                    flags: if up { 0 } else { BACKEND_F_DOWN },
                    _pad: 0,
                    listener_id: id,
                    generation,
                    weight,
                },
                key,
                id: bid,
                weight: b.weight,
                up,
            });
        }
        let live_count = live.len() as u32;
        let table = tables
            .table(cache, id, l.scheduler, live, ring_size)
            .map_err(|source| PlanError::Table {
                listener: l.name.clone(),
                source,
            })?;
        let key = service;
        *out.dests.entry(key.addr).or_insert(0) |= DEST_VIP;
        if l.forwarding == Some(Forwarding::Nat) {
            // Replies come from the backends to the clients' addresses.
            out.settings.nat = 1;
            for b in &l.backends {
                *out.dests.entry(to_addr(b.address)).or_insert(0) |= DEST_NAT_BACKEND;
            }
        }
        let acl = match &l.acl {
            Some(a) => {
                // Only the VIP's family: its clients are of that family,
                // and an IPv6 prefix short enough to cover the
                // IPv4-mapped range (`::/0`) would otherwise match the
                // IPv4 clients the trie holds in that form.
                out.acl.extend(
                    a.cidrs
                        .iter()
                        .filter(|n| n.addr().is_ipv4() == l.vip.is_ipv4())
                        .map(|n| acl_entry(id, n)),
                );
                match a.mode {
                    AclMode::Allow => ACL_ALLOW,
                    AclMode::Deny => ACL_DENY,
                }
            }
            None => ACL_NONE,
        };
        out.listeners.push(ListenerPlan {
            name: l.name.clone(),
            id,
            key,
            entry: Listener {
                id,
                ring_base: 0,
                ring_size: table.len() as u32,
                idle_timeout_s: secs(l.idle_timeout),
                persist_timeout_s: l.persistence.as_ref().map_or(0, |p| secs(p.timeout)),
                live_backends: live_count,
                mode: mode(l.forwarding),
                scheduler: scheduler(l.scheduler),
                acl,
                _pad: [0; 5],
            },
            table,
            backends,
        });
    }
    for a in &cfg.agent.local_addresses {
        let addr = to_addr(*a);
        *out.dests.entry(addr).or_insert(0) |= DEST_SNAT;
        match a {
            IpAddr::V4(_) => out.snat_v4.push(addr),
            IpAddr::V6(_) => out.snat_v6.push(addr),
        }
    }
    out.dest_table = super::dest_table(&out.dests)?;
    Ok(out)
}

/// Whether the backups among `backends` (of listener `listener`, or of one
/// of its groups) take new flows or requests: only while none of the
/// others is up with a weight (keepalived's `sorry_server`, HAProxy's and
/// nginx's `backup`).
pub fn backups_serve(listener: &str, backends: &[crate::config::Backend], health: &Health) -> bool {
    !backends.iter().any(|b| {
        !b.backup
            && b.weight > 0
            && health.is_up(&BackendKey {
                listener: listener.to_owned(),
                addr: b.socket_addr(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds() {
        use std::time::Duration;
        assert_eq!(secs(Duration::from_millis(1500)), 2);
        assert_eq!(secs(Duration::from_secs(900)), 900);
        assert_eq!(secs(Duration::from_millis(1)), 1);
    }
    use slb_common::limits::NO_BACKEND;

    const CFG: &str = r#"
[agent]
interfaces = ["eth0"]
probe_source = ["100.64.0.1", "fd64::1"]
local_addresses = ["100.64.0.10", "fd64::10"]
maglev_table_size = 1021

[[listener]]
name = "web"
vip = "10.10.0.10"
port = 80
protocol = "tcp"
scheduler = "maglev"
  [[listener.backend]]
  address = "10.0.1.2"
  port = 8080
  weight = 1
  [[listener.backend]]
  address = "10.0.2.2"
  port = 8080
  weight = 3
  [[listener.backend]]
  address = "10.0.3.2"
  port = 8080
  weight = 0

[[listener]]
name = "dns6"
vip = "fd10::10"
port = 53
protocol = "udp"
scheduler = "wrr"
  [[listener.backend]]
  address = "fd00:1::2"
  port = 53
"#;

    fn cfg() -> Config {
        crate::config::parse(CFG).unwrap()
    }

    #[test]
    fn maps_config_to_entries() {
        let mut ids = Ids::default();
        let p = plan(&cfg(), &mut ids, &Health::default()).unwrap();
        assert_eq!(p.listeners.len(), 2);
        let web = &p.listeners[0];
        assert_eq!(web.key.port, 80u16.to_be());
        assert_eq!(web.key.proto, PROTO_TCP);
        assert_eq!(web.entry.ring_size, 1021);
        assert_eq!(web.entry.live_backends, 2, "weight 0 has no slots");
        let count = |id: u32| web.table.iter().filter(|&&s| s == id).count();
        let (b1, b2, b3) = (web.backends[0].id, web.backends[1].id, web.backends[2].id);
        assert_eq!(count(b3), 0);
        assert!((count(b2) as f64 / count(b1) as f64 - 3.0).abs() < 0.1);
        let dns = &p.listeners[1];
        assert_eq!(dns.key.proto, PROTO_UDP);
        assert_eq!(dns.entry.idle_timeout_s, 90);
        assert_eq!(*dns.table, vec![dns.backends[0].id]);
        assert_eq!(p.dests.get(&web.key.addr), Some(&DEST_VIP));
        assert_eq!(p.snat_v4.len(), 1);
        assert_eq!(p.snat_v6.len(), 1);
        assert_eq!(p.dests.get(&p.snat_v6[0]), Some(&DEST_SNAT));
    }

    #[test]
    fn renaming_a_listener_keeps_its_ids_and_table() {
        let mut ids = Ids::default();
        let before = plan(&cfg(), &mut ids, &Health::default()).unwrap();
        let renamed = crate::config::parse(&CFG.replace("\"web\"", "\"www\"")).unwrap();
        let after = plan(&renamed, &mut ids, &Health::default()).unwrap();
        let (b, a) = (&before.listeners[0], &after.listeners[0]);
        assert_eq!((b.name.as_str(), a.name.as_str()), ("web", "www"));
        assert_eq!(a.id, b.id);
        assert_eq!(a.table, b.table);
        let entries =
            |l: &ListenerPlan| -> Vec<_> { l.backends.iter().map(|b| (b.id, b.entry)).collect() };
        assert_eq!(entries(a), entries(b), "same ids and generations");
        assert_eq!(
            a.backends[0].key.listener, "www",
            "health keys follow the name"
        );
    }

    #[test]
    fn down_backend_leaves_the_table_and_is_flagged() {
        let mut ids = Ids::default();
        let c = cfg();
        let before = plan(&c, &mut ids, &Health::default()).unwrap();
        let mut h = Health::default();
        h.down.insert(before.listeners[0].backends[1].key.clone());
        let after = plan(&c, &mut ids, &h).unwrap();
        let web = &after.listeners[0];
        assert_eq!(web.entry.live_backends, 1);
        assert!(web.table.iter().all(|&s| s == web.backends[0].id));
        assert_eq!(web.backends[1].entry.flags, BACKEND_F_DOWN);
        // Slots of the surviving backend did not move.
        let b0 = web.backends[0].id;
        for (old, new) in before.listeners[0].table.iter().zip(web.table.iter()) {
            if *old == b0 {
                assert_eq!(*new, b0);
            }
        }
        // All down: the listener has no live backend and drops new flows.
        h.down.insert(before.listeners[0].backends[0].key.clone());
        let none = plan(&c, &mut ids, &h).unwrap();
        assert_eq!(none.listeners[0].entry.live_backends, 0);
        assert!(none.listeners[0].table.iter().all(|&s| s == NO_BACKEND));
    }

    /// A backup takes no flows while another backend is up with a weight
    /// (its dataplane entry is drained, so no pin or `wlc` pick reaches
    /// it), and takes them all once none is.
    #[test]
    fn a_backup_serves_only_when_no_other_backend_does() {
        let text = CFG.replacen(
            "address = \"10.0.3.2\"\n  port = 8080\n  weight = 0",
            "address = \"10.0.3.2\"\n  port = 8080\n  weight = 2\n  backup = true",
            1,
        );
        let c = crate::config::parse(&text).unwrap();
        assert!(c.listeners[0].backends[2].backup);
        let mut ids = Ids::default();
        let normal = plan(&c, &mut ids, &Health::default()).unwrap();
        let web = &normal.listeners[0];
        let backup = web.backends[2].id;
        assert_eq!(web.entry.live_backends, 2);
        assert!(!web.table.contains(&backup));
        assert_eq!(web.backends[2].entry.weight, 0, "standing by: drained");
        assert_eq!(web.backends[2].weight, 2, "configured weight kept");

        // One primary down: the other still serves, the backup waits.
        let mut h = Health::default();
        h.down.insert(web.backends[0].key.clone());
        let one = plan(&c, &mut ids, &h).unwrap();
        assert!(!one.listeners[0].table.contains(&backup));

        // Both down: the backup takes every new flow, with its weight.
        h.down.insert(web.backends[1].key.clone());
        let outage = plan(&c, &mut ids, &h).unwrap();
        let web = &outage.listeners[0];
        assert_eq!(web.entry.live_backends, 1);
        assert!(web.table.iter().all(|&s| s == backup));
        assert_eq!(web.backends[2].entry.weight, 2);

        // A primary drained by weight 0 does not hold the backup back.
        let drained = text.replacen("weight = 1\n", "weight = 0\n", 1).replacen(
            "weight = 3\n",
            "weight = 0\n",
            1,
        );
        let c = crate::config::parse(&drained).unwrap();
        let p = plan(&c, &mut ids, &Health::default()).unwrap();
        assert!(p.listeners[0].table.iter().all(|&s| s == backup));
    }

    /// Health changes and reloads plan every listener; only a listener
    /// whose live backends, weights, scheduler or table size changed gets
    /// its lookup table built again (a Maglev table takes milliseconds,
    /// and an operator may have 64 of them). The others are taken from
    /// the previous plan, and are what building them would give.
    #[test]
    fn only_changed_listeners_get_their_table_built() {
        let mut ids = Ids::default();
        let c = cfg();
        let (first, cache) =
            plan_cached(&c, &mut ids, &Health::default(), &TableCache::default()).unwrap();
        let (web, dns) = (first.listeners[0].id, first.listeners[1].id);
        assert_eq!(cache.built(), [web, dns]);

        let (again, cache) = plan_cached(&c, &mut ids, &Health::default(), &cache).unwrap();
        assert!(cache.built().is_empty(), "{:?}", cache.built());
        assert_eq!(again, first);
        // Shared, not copied: every apply plans (a health change too), and
        // the applier's state is cloned for each, to roll back to.
        for (a, b) in again.listeners.iter().zip(&first.listeners) {
            assert!(std::sync::Arc::ptr_eq(&a.table, &b.table), "{}", a.name);
        }

        // A weight of `web` changes: `web` only.
        let heavier = crate::config::parse(&CFG.replacen("weight = 3", "weight = 4", 1)).unwrap();
        let (p, cache) = plan_cached(&heavier, &mut ids, &Health::default(), &cache).unwrap();
        assert_eq!(cache.built(), [web]);
        assert_eq!(
            p,
            plan(&heavier, &mut ids.clone(), &Health::default()).unwrap()
        );

        // The backend of `dns6` goes down: `dns6` only.
        let mut h = Health::default();
        h.down.insert(p.listeners[1].backends[0].key.clone());
        let (p, cache) = plan_cached(&heavier, &mut ids, &h, &cache).unwrap();
        assert_eq!(cache.built(), [dns]);
        assert_eq!(p, plan(&heavier, &mut ids.clone(), &h).unwrap());

        // Another scheduler for `web`: built again.
        let sh = crate::config::parse(&CFG.replacen("weight = 3", "weight = 4", 1).replacen(
            "scheduler = \"maglev\"",
            "scheduler = \"sh\"",
            1,
        ))
        .unwrap();
        let (_, cache) = plan_cached(&sh, &mut ids, &h, &cache).unwrap();
        assert_eq!(cache.built(), [web]);
    }

    /// A plan that fails (here: the destination table cannot place the
    /// addresses of a file that passed validation) changes no id: planning
    /// the running configuration again gives every listener and backend
    /// the id and generation it had, so its flows and counters stay.
    #[test]
    fn a_failed_plan_keeps_every_id() {
        use slb_common::{hash::dest_slot, limits::DEST_PROBES};
        let mut ids = Ids::default();
        let c = cfg();
        let before = plan(&c, &mut ids, &Health::default()).unwrap();
        // `nat` backends on one first slot, one more than it can probe.
        let first = dest_slot(&to_addr("10.0.9.0".parse().unwrap()));
        let mut backends = String::new();
        let mut found = 0;
        for i in 0u32.. {
            let ip = std::net::Ipv4Addr::from(0x0a09_0000 + i);
            if dest_slot(&to_addr(ip.into())) == first {
                backends += &format!("  [[listener.backend]]\n  address = \"{ip}\"\n  port = 80\n");
                found += 1;
                if found > DEST_PROBES {
                    break;
                }
            }
        }
        // `web` removed, `dns6` kept, a new `nat` listener.
        let web_end = CFG.find("[[listener]]\nname = \"dns6\"").unwrap();
        let web_start = CFG.find("[[listener]]").unwrap();
        let failing = format!(
            "{}{}\n[[listener]]\nname = \"many\"\nvip = \"10.10.0.11\"\nport = 80\n\
             protocol = \"tcp\"\nforwarding = \"nat\"\n{backends}",
            &CFG[..web_start],
            &CFG[web_end..]
        );
        let failing = crate::config::parse(&failing).unwrap();
        assert!(matches!(
            plan(&failing, &mut ids, &Health::default()),
            Err(PlanError::Dests(_))
        ));
        let again = plan(&c, &mut ids, &Health::default()).unwrap();
        let entries = |p: &Plan| -> Vec<_> {
            p.listeners
                .iter()
                .map(|l| {
                    (
                        l.id,
                        l.backends
                            .iter()
                            .map(|b| (b.id, b.entry))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect()
        };
        assert_eq!(entries(&again), entries(&before));
    }
}

/// Standby failover ("Failover to a standby" in the README): two nodes
/// with the same configuration but different id histories must map every
/// table slot of a `maglev` or `sh` listener to the same backend address.
#[cfg(test)]
mod failover_tests {
    use super::*;
    use std::net::SocketAddr;

    fn listener(
        name: &str,
        vip: &str,
        port: u16,
        sched: &str,
        backends: &[(&str, u16, u32)],
    ) -> String {
        let mut s = format!(
            "\n[[listener]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {port}\nprotocol = \"tcp\"\nscheduler = \"{sched}\"\n"
        );
        for (a, p, w) in backends {
            s += &format!(
                "  [[listener.backend]]\n  address = \"{a}\"\n  port = {p}\n  weight = {w}\n"
            );
        }
        s
    }

    const AGENT: &str = "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = [\"100.64.0.1\", \"fd64::1\"]\nlocal_addresses = [\"100.64.0.10\", \"fd64::10\"]\nmaglev_table_size = 1021\n";

    fn by_addr(p: &Plan) -> BTreeMap<String, Vec<Option<SocketAddr>>> {
        p.listeners
            .iter()
            .map(|l| {
                let addr: BTreeMap<u32, SocketAddr> =
                    l.backends.iter().map(|b| (b.id, b.key.addr)).collect();
                (
                    l.name.clone(),
                    l.table.iter().map(|id| addr.get(id).copied()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn standby_with_other_ids_picks_the_same_backends() {
        let v4 = [
            ("10.0.1.2", 80, 1),
            ("10.0.1.3", 80, 3),
            ("10.0.1.4", 80, 2),
        ];
        let v6 = [("fd00::2", 80, 5), ("fd00::3", 80, 5), ("fd00::4", 80, 1)];
        let target = format!(
            "{AGENT}{}{}{}",
            listener("web", "10.10.0.10", 80, "maglev", &v4),
            listener("src", "10.10.0.11", 80, "sh", &v4),
            listener("web6", "fd10::10", 80, "maglev", &v6),
        );
        // Node A: started with the target configuration.
        let mut a = Ids::default();
        let pa = plan(
            &crate::config::parse(&target).unwrap(),
            &mut a,
            &Health::default(),
        )
        .unwrap();
        // Node B: had another listener and more backends first (so every
        // id differs), listed in another order, then reloaded.
        let mut more = v4.to_vec();
        more.insert(0, ("10.0.9.9", 80, 7));
        let mut rev6 = v6.to_vec();
        rev6.reverse();
        let before = format!(
            "{AGENT}{}{}{}{}",
            listener(
                "old",
                "10.10.0.99",
                80,
                "maglev",
                &[("10.0.8.1", 80, 1), ("10.0.8.2", 80, 1)]
            ),
            listener("web6", "fd10::10", 80, "maglev", &rev6),
            listener("src", "10.10.0.11", 80, "sh", &more),
            listener("web", "10.10.0.10", 80, "maglev", &more),
        );
        let mut b = Ids::default();
        plan(
            &crate::config::parse(&before).unwrap(),
            &mut b,
            &Health::default(),
        )
        .unwrap();
        let pb = plan(
            &crate::config::parse(&target).unwrap(),
            &mut b,
            &Health::default(),
        )
        .unwrap();
        let ids = |p: &Plan| -> Vec<u32> {
            p.listeners
                .iter()
                .flat_map(|l| l.backends.iter().map(|b| b.id))
                .collect()
        };
        assert_ne!(ids(&pa), ids(&pb), "the histories must give other ids");
        let (ta, tb) = (by_addr(&pa), by_addr(&pb));
        assert_eq!(ta.len(), 3);
        for (name, slots) in &ta {
            assert!(slots.iter().all(Option::is_some), "{name}");
            assert_eq!(
                Some(slots),
                tb.get(name),
                "{name}: slots differ between nodes"
            );
        }
    }
}
