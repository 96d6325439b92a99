//! Writing a plan into the dataplane, in an order that never shows the XDP
//! program a half-built state: backends before the tables that name them,
//! tables before the listener entries that point at them, listener entries
//! before the destination flags that lead to them (and the reverse order
//! for removals).
use crate::config::Config;
use crate::dataplane::{AclEntry, Dataplane, DataplaneError};
use crate::planner::{
    self, BackendKey, BackendSlot, DestTableFull, Health, Ids, Plan, PlanError, RetiredNat, Rings,
    TableCache,
};
use slb_common::addr::to_addr;
use slb_common::{
    limits::{MAX_BACKENDS, RINGS_PER_LISTENER},
    listener::{BACKEND_F_DOWN, BACKEND_F_RETIRED, DEST_NAT_BACKEND},
    VipKey,
};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};
use tracing::{debug, error};

/// A change planned by [`Applier::prepare`], written by
/// [`Applier::commit`].
pub struct Prepared {
    ids: Ids,
    plan: Plan,
    tables: TableCache,
}

#[derive(Clone, Default)]
pub struct Applier {
    pub ids: Ids,
    rings: Rings,
    retired_nat: RetiredNat,
    /// The lookup tables of the last change written.
    tables: TableCache,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    Dests(#[from] DestTableFull),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// How long flags of `nat` backends found in adopted state are kept when
/// the configuration no longer has them: the longest idle timeout of the
/// configuration, at least TCP's default (the previous run's listeners
/// are not known), and longer while flows to them live.
fn adopted_nat_idle(cfg: &Config) -> Duration {
    cfg.l4_listeners()
        .map(|l| l.idle_timeout)
        .fold(Duration::from_secs(900), Duration::max)
}

impl Applier {
    /// Prepares for maps adopted from a previous run. Listeners and
    /// backends that are still configured keep their ids and generations,
    /// so their flows keep their backend; any other id that gets reused
    /// continues its generation count, so flows of its previous owner are
    /// re-scheduled. Each listener's next table goes to the half that is
    /// not live. Returns the configured backends the previous run held
    /// down, which stay down until their first probe.
    pub fn adopt(
        &mut self,
        dp: &Dataplane,
        cfg: &Config,
    ) -> Result<BTreeSet<BackendKey>, DataplaneError> {
        let mut down = BTreeSet::new();
        let mut pinned_backends = Vec::new();
        for id in 0..MAX_BACKENDS {
            let b = dp.backend(id)?;
            if b.generation != 0 {
                self.ids.seed_generation(id, b.generation);
                pinned_backends.push((id, b));
            }
        }
        let flagged = dp
            .dest_entries()?
            .into_iter()
            .filter(|d| d.flags & DEST_NAT_BACKEND != 0)
            .map(|d| d.addr);
        self.retired_nat
            .adopt(flagged, Instant::now(), adopted_nat_idle(cfg));
        let ring_size = dp.ring_size();
        let entries = dp.listener_entries();
        for (key, l) in &entries {
            let half = (l.ring_base / ring_size) % RINGS_PER_LISTENER;
            self.rings.adopt(l.id, half as usize);
            // Every pinned listener keeps its id for now; the first plan
            // frees the ids of those no longer configured.
            self.ids.preassign_listener(*key, l.id);
            let Some(listener) = cfg.l4_listeners().find(|c| planner::vip_key(c) == *key) else {
                continue;
            };
            for b in &listener.backends {
                let (addr, port) = (to_addr(b.address), b.port.to_be());
                // A backend removed and added again is in the table twice:
                // under its current id and, retired, under its old one,
                // whose flows and counters are no longer its own.
                if let Some((id, pinned)) = pinned_backends.iter().find(|(_, p)| {
                    p.listener_id == l.id
                        && p.addr == addr
                        && p.port == port
                        && p.flags & BACKEND_F_RETIRED == 0
                }) {
                    let health_key = BackendKey {
                        listener: listener.name.clone(),
                        addr: b.socket_addr(),
                    };
                    if pinned.flags & BACKEND_F_DOWN != 0 {
                        down.insert(health_key);
                    }
                    let slot = BackendSlot {
                        service: *key,
                        addr: b.socket_addr(),
                    };
                    self.ids.preassign_backend(slot, *id, pinned.generation);
                }
            }
        }
        Ok(down)
    }

    pub fn apply(&mut self, dp: &mut Dataplane, plan: &Plan) -> Result<(), ApplyError> {
        dp.set_snat_pool(&plan.snat_v4, &plan.snat_v6)?;
        // A listener's ACL entries change next to its own entry: those it
        // gets just before it (an allow-list is never checked before its
        // entries are in), those it loses just after (a list being taken
        // off is not checked emptied). Between the two lie only that
        // listener's writes, not the lookup tables of the others (a
        // Maglev table is tens of thousands of writes). A switch between
        // `allow` and `deny` cannot be one write (the entries are
        // shared), but lasts no longer than that.
        let mut present_acl = dp.acl_entries();
        let ring_size = dp.ring_size();
        // Ids of new owners start from zero counters: a reused id (or one
        // a previous run's pinned maps counted under) still holds what its
        // previous owner was counted.
        let (fresh_listeners, fresh_backends) = self.ids.fresh();
        for l in &plan.listeners {
            for b in &l.backends {
                dp.set_backend(b.id, &b.entry)?;
                // After the entry: flows of a previous owner no longer match
                // its generation, so nothing of theirs is counted here any
                // more; before the table that sends new flows to it.
                if fresh_backends.contains(&b.id) {
                    dp.clear_backend_counters(b.id)?;
                }
            }
            if fresh_listeners.contains(&l.id) {
                dp.clear_listener_counters(l.id)?;
            }
            let mut entry = l.entry;
            let swap = self.rings.prepare(l.id, &l.table, ring_size);
            match &swap {
                Some(swap) => {
                    let previous = swap.previous.as_deref().map(Vec::as_slice);
                    dp.write_ring(swap.base, &l.table, previous)?;
                    entry.ring_base = swap.base;
                }
                None => entry.ring_base = self.rings.live_base(l.id, ring_size),
            }
            let ours = |e: &&AclEntry| e.0 == l.id;
            let gained: Vec<AclEntry> = plan
                .acl
                .difference(&present_acl)
                .filter(ours)
                .copied()
                .collect();
            dp.insert_acl(&gained)?;
            present_acl.extend(gained);
            dp.set_listener(&l.key, &entry)?;
            if let Some(swap) = swap {
                self.rings.committed(l.id, swap.half, l.table.clone());
                debug!(listener = %l.name, base = swap.base, "lookup table switched");
            }
            let lost: Vec<AclEntry> = present_acl
                .difference(&plan.acl)
                .filter(ours)
                .copied()
                .collect();
            dp.remove_acl(&lost)?;
            for e in &lost {
                present_acl.remove(e);
            }
        }
        let wanted: BTreeSet<VipKey> = plan.listeners.iter().map(|l| l.key).collect();
        let live_ids: BTreeSet<u32> = plan.listeners.iter().map(|l| l.id).collect();
        for (key, l) in dp.listener_entries() {
            if !wanted.contains(&key) {
                dp.remove_listener(&key)?;
                if !live_ids.contains(&l.id) {
                    self.rings.forget(l.id);
                }
            }
        }
        // The entries of removed listeners, now that none checks them.
        dp.remove_acl(present_acl.difference(&plan.acl))?;
        self.ids.counted_afresh();
        // Removed backends keep their flows but get no new ones: weight 0
        // in their entry is what the program reads as drained (a source-IP
        // persistence pin to it no longer holds). The retired flag tells a
        // restarted agent the entry is no backend's any more.
        for id in self.ids.retired_backends() {
            let mut b = dp.backend(id)?;
            if b.weight != 0 || b.flags & BACKEND_F_RETIRED == 0 {
                b.weight = 0;
                b.flags |= BACKEND_F_RETIRED;
                dp.set_backend(id, &b)?;
            }
        }
        self.ids.retirement_written();
        // Backends that just stopped being `nat` backends keep the flag
        // that gets their replies translated while their flows may run.
        let kept = self
            .retired_nat
            .keep(plan, Instant::now(), |due| dp.addrs_with_live_flows(due))?;
        let (dest_table, settings) = match &kept {
            Some(k) => (&k.dest_table, &k.settings),
            None => (&plan.dest_table, &plan.settings),
        };
        dp.write_dest_table(dest_table)?;
        dp.set_settings(settings)?;
        Ok(())
    }

    /// The tcp/udp listeners of `cfg` by their dataplane id (what flow
    /// entries and counters name them by).
    pub fn listeners_by_id<'a>(
        &self,
        cfg: &'a Config,
    ) -> std::collections::BTreeMap<u32, &'a crate::config::Listener> {
        cfg.l4_listeners()
            .filter_map(|l| Some((self.ids.listener(&planner::vip_key(l))?, l)))
            .collect()
    }

    /// Plans `cfg` with `health` (the ids it would get, the destination
    /// table, the lookup tables) without writing anything or changing an
    /// id: a configuration that cannot be planned is refused before
    /// anything else changes.
    pub fn prepare(&self, cfg: &Config, health: &Health) -> Result<Prepared, ApplyError> {
        let mut ids = self.ids.clone();
        let (plan, tables) = planner::plan_cached(cfg, &mut ids, health, &self.tables)?;
        Ok(Prepared { ids, plan, tables })
    }

    /// Plans `cfg` with `health` and writes it as one change (see
    /// [`Applier::commit`]).
    pub fn change(
        &mut self,
        dp: &mut Dataplane,
        cfg: &Config,
        health: &Health,
    ) -> Result<(), ApplyError> {
        let prepared = self.prepare(cfg, health)?;
        self.commit(dp, prepared)
    }

    /// Writes a prepared change as one: when a write fails, the maps get
    /// back what they held before (see `Dataplane::checkpoint`) and this
    /// applier its ids, tables and retired addresses, so a failed change
    /// leaves everything as it was and the next one starts from there.
    pub fn commit(&mut self, dp: &mut Dataplane, prepared: Prepared) -> Result<(), ApplyError> {
        let before = self.clone();
        let cp = dp.checkpoint();
        self.ids = prepared.ids;
        match self.apply(dp, &prepared.plan) {
            Ok(()) => {
                self.tables = prepared.tables;
                debug!(entries = dp.written_since(&cp), "change written");
                dp.release(cp);
                Ok(())
            }
            Err(e) => {
                if let Err(undo) = dp.roll_back(cp) {
                    error!("undoing the failed change failed: {undo}");
                }
                *self = before;
                self.rings.forget_spares();
                Err(e)
            }
        }
    }

    /// Whether a retired `nat` backend's time is up, so the next apply
    /// would drop its flag (or find its flows still live).
    pub fn retired_nat_due(&self, now: Instant) -> bool {
        self.retired_nat.next_due().is_some_and(|t| t <= now)
    }
}
