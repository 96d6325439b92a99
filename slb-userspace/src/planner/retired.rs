//! Backends that stopped being `nat` backends while flows to them may still
//! run.
//!
//! A `nat` backend replies to the client's own address, so the program
//! only translates its replies when the `DESTS` entry of the backend's
//! address carries `DEST_NAT_BACKEND` (and `Settings::nat` is on). A
//! backend removed from a `nat` listener, or one whose listener switched
//! to another mode, keeps its established flows (a removed backend's flows
//! run until idle); without the flag their replies would reach the client
//! untranslated, and the client would reset the connection. So the flag
//! is kept for the listener's idle timeout after the change, and longer
//! while the connection table still holds live flows to the address.
use super::{dest_table, DestTableFull, Plan};
use slb_common::{
    listener::{DEST_NAT_BACKEND, MODE_NAT},
    Addr, DestSlot, Settings,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

#[derive(Clone, Debug, Default)]
pub struct RetiredNat {
    /// `nat` backends of the last plan, with their listener's idle
    /// timeout (the longest, for an address in several listeners).
    current: BTreeMap<Addr, Duration>,
    /// Addresses that are no longer `nat` backends, and until when they
    /// keep the flag at least.
    until: BTreeMap<Addr, (Instant, Duration)>,
}

/// What to write instead of the plan's destination table and settings.
#[derive(Debug, PartialEq, Eq)]
pub struct Kept {
    pub dest_table: Vec<DestSlot>,
    pub settings: Settings,
}

fn nat_backends(plan: &Plan) -> BTreeMap<Addr, Duration> {
    let mut out = BTreeMap::new();
    for l in plan.listeners.iter().filter(|l| l.entry.mode == MODE_NAT) {
        let idle = Duration::from_secs(u64::from(l.entry.idle_timeout_s));
        for b in &l.backends {
            let e = out.entry(b.entry.addr).or_insert(idle);
            *e = (*e).max(idle);
        }
    }
    out
}

impl RetiredNat {
    /// Records the `nat` backends of `plan` (about to be applied at `now`)
    /// and returns the destination table and settings to write instead of
    /// the plan's when retired addresses keep their flag. `live` tells,
    /// of the addresses whose time is up, which ones still have live flows
    /// in the connection table: those are kept for another idle timeout.
    pub fn keep(
        &mut self,
        plan: &Plan,
        now: Instant,
        live: impl FnOnce(&BTreeSet<Addr>) -> BTreeSet<Addr>,
    ) -> Result<Option<Kept>, DestTableFull> {
        let nat = nat_backends(plan);
        for (addr, idle) in &self.current {
            if !nat.contains_key(addr) {
                let (until, kept) = self.until.entry(*addr).or_insert((now + *idle, *idle));
                *until = (*until).max(now + *idle);
                *kept = (*kept).max(*idle);
            }
        }
        self.until.retain(|addr, _| !nat.contains_key(addr));
        self.current = nat;
        let due: BTreeSet<Addr> = self
            .until
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(a, _)| *a)
            .collect();
        if !due.is_empty() {
            let still = live(&due);
            for addr in due {
                if still.contains(&addr) {
                    if let Some((until, idle)) = self.until.get_mut(&addr) {
                        *until = now + *idle;
                    }
                } else {
                    self.until.remove(&addr);
                }
            }
        }
        if self.until.is_empty() {
            return Ok(None);
        }
        let mut dests = plan.dests.clone();
        for addr in self.until.keys() {
            *dests.entry(*addr).or_insert(0) |= DEST_NAT_BACKEND;
        }
        let mut settings = plan.settings;
        settings.nat = 1;
        Ok(Some(Kept {
            dest_table: dest_table(&dests)?,
            settings,
        }))
    }

    /// Addresses found flagged in adopted pinned state that are not `nat`
    /// backends of the configuration: a previous run retired them, or they
    /// were `nat` backends of a configuration this run does not know.
    /// Kept for `idle` from `now` (and while flows to them live).
    pub fn adopt(&mut self, addrs: impl IntoIterator<Item = Addr>, now: Instant, idle: Duration) {
        for addr in addrs {
            self.until.insert(addr, (now + idle, idle));
        }
    }

    /// When the next retired address's time is up.
    pub fn next_due(&self) -> Option<Instant> {
        self.until.values().map(|(until, _)| *until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{plan, Health, Ids};
    use slb_common::addr::to_addr;

    fn config(mode: &str, backends: &[&str]) -> crate::config::Config {
        let mut s = String::from(
            "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = \"100.64.0.1\"\n\
             local_addresses = [\"100.64.0.10\"]\n\
             [[listener]]\nname = \"web\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"tcp\"\n\
             idle_timeout = \"100s\"\n",
        );
        s += &format!("forwarding = \"{mode}\"\n");
        for b in backends {
            s += &format!("[[listener.backend]]\naddress = \"{b}\"\nport = 8080\n");
        }
        crate::config::parse(&s).unwrap()
    }

    fn flagged(k: &Option<Kept>, addr: &str) -> bool {
        let a = to_addr(addr.parse().unwrap());
        k.as_ref().is_some_and(|k| {
            k.settings.nat == 1
                && k.dest_table
                    .iter()
                    .any(|s| s.addr == a && s.flags & DEST_NAT_BACKEND != 0)
        })
    }

    #[test]
    fn a_backend_leaving_nat_keeps_its_flag_while_its_flows_may_live() {
        let mut ids = Ids::default();
        let mut r = RetiredNat::default();
        let t0 = Instant::now();
        let none = |_: &BTreeSet<Addr>| BTreeSet::new();
        let p = plan(
            &config("nat", &["10.0.1.2", "10.0.2.2"]),
            &mut ids,
            &Health::default(),
        )
        .unwrap();
        assert_eq!(r.keep(&p, t0, none), Ok(None), "nothing retired");
        // 10.0.1.2 removed, and the listener switched to fullnat.
        let p = plan(
            &config("fullnat", &["10.0.2.2"]),
            &mut ids,
            &Health::default(),
        )
        .unwrap();
        assert_eq!(p.settings.nat, 0);
        let k = r.keep(&p, t0, none).unwrap();
        assert!(flagged(&k, "10.0.1.2") && flagged(&k, "10.0.2.2"));
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(100)));
        let k = r.keep(&p, t0 + Duration::from_secs(99), none).unwrap();
        assert!(flagged(&k, "10.0.1.2"));
        // Time is up: kept while the table still has flows to it.
        let t1 = t0 + Duration::from_secs(100);
        let k = r
            .keep(&p, t1, |due| {
                assert_eq!(due.len(), 2);
                BTreeSet::from([to_addr("10.0.2.2".parse().unwrap())])
            })
            .unwrap();
        assert!(!flagged(&k, "10.0.1.2") && flagged(&k, "10.0.2.2"));
        assert_eq!(r.next_due(), Some(t1 + Duration::from_secs(100)));
        assert_eq!(r.keep(&p, t1 + Duration::from_secs(100), none), Ok(None));
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn a_backend_back_in_nat_is_no_longer_retired() {
        let mut ids = Ids::default();
        let mut r = RetiredNat::default();
        let t0 = Instant::now();
        let none = |_: &BTreeSet<Addr>| BTreeSet::new();
        let nat = plan(&config("nat", &["10.0.1.2"]), &mut ids, &Health::default()).unwrap();
        r.keep(&nat, t0, none).unwrap();
        let fullnat = plan(
            &config("fullnat", &["10.0.1.2"]),
            &mut ids,
            &Health::default(),
        )
        .unwrap();
        assert!(r.keep(&fullnat, t0, none).unwrap().is_some());
        assert_eq!(r.keep(&nat, t0, none), Ok(None));
        assert_eq!(r.next_due(), None);
    }
}
