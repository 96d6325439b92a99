//! Reading the connection table entry by entry, for `slb flows`.
use super::counters::monotonic_coarse_ns;
use super::Dataplane;
use slb_common::flow::{flow_ended, FLOW_F_DR, FLOW_F_NAT};
use slb_common::{Backend, Flow, FlowKey};

/// One connection-table entry and what listing it needs.
pub struct Connection {
    pub key: FlowKey,
    pub flow: Flow,
    /// The backend the flow was scheduled to, `None` when its slot now
    /// holds another one (removed by a reload).
    pub backend: Option<Backend>,
    /// Since the last packet either way.
    pub idle_ns: u64,
}

impl Dataplane {
    /// Calls `f` with every entry of the connection table, read in
    /// batches (see `batch`), or by key where the kernel cannot. False
    /// when a read failed part way (`f` saw only some entries).
    pub(super) fn each_flow(&self, mut f: impl FnMut(&FlowKey, &Flow)) -> bool {
        use std::os::fd::AsFd;
        match super::batch::for_each(self.flows_fd.as_fd(), &mut f) {
            Ok(()) => true,
            Err(super::batch::BatchError::Unsupported(e)) => {
                tracing::debug!("reading the connection table by key: {e}");
                for (k, v) in self.flows.iter().filter_map(Result::ok) {
                    f(&k, &v);
                }
                true
            }
            Err(e) => {
                tracing::warn!("reading the connection table: {e}");
                false
            }
        }
    }

    /// Entries of the connection table and of the reply table.
    pub fn flow_entries(&self) -> (usize, usize) {
        use std::os::fd::AsFd;
        let mut flows = 0;
        self.each_flow(|_, _| flows += 1);
        let mut replies = 0;
        let by_batch = super::batch::for_each::<FlowKey, slb_common::Reverse>(
            self.reverse_fd.as_fd(),
            |_, _| replies += 1,
        );
        if let Err(super::batch::BatchError::Unsupported(_)) = by_batch {
            replies = self.reverse.keys().count();
        }
        (flows, replies)
    }

    /// Calls `f` with every entry of the connection table. `idle_ns` gives
    /// a listener's idle timeout: an entry idle longer than that by its own
    /// timestamp may still be alive by its replies (a download the client
    /// does not acknowledge for a while in `nat`/FULLNAT mode refreshes
    /// only the reply entry, as the dataplane's `kept_alive_by_replies`
    /// reads it), so only for those the reply entry is read too.
    pub fn connections(&self, idle_ns: impl Fn(u32) -> Option<u64>, mut f: impl FnMut(Connection)) {
        let now = monotonic_coarse_ns();
        let mut backends = std::collections::BTreeMap::new();
        self.each_flow(|&key, &flow| {
            let backend = *backends
                .entry(flow.backend_id)
                .or_insert_with(|| self.backends.get(&flow.backend_id, 0).ok());
            let backend = backend.filter(|b| b.generation == flow.backend_gen);
            let mut idle = now.saturating_sub(flow.seen_ns);
            if let Some(b) = &backend {
                if idle_ns(flow.listener_id).is_some_and(|limit| idle > limit) {
                    if let Some(seen) = self.reply_seen_ns(&key, &flow, b) {
                        idle = idle.min(now.saturating_sub(seen));
                    }
                }
            }
            f(Connection {
                key,
                flow,
                backend,
                idle_ns: idle,
            });
        });
    }

    /// When the flow's reply entry last saw a reply, if it still belongs
    /// to this flow.
    fn reply_seen_ns(&self, key: &FlowKey, flow: &Flow, b: &Backend) -> Option<u64> {
        if flow_ended(flow.flags) || flow.flags & FLOW_F_DR != 0 {
            return None;
        }
        let (dst, dport) = if flow.flags & FLOW_F_NAT != 0 {
            (key.src, key.sport)
        } else {
            (flow.snat_addr, flow.snat_port)
        };
        let reply = FlowKey {
            src: b.addr,
            dst,
            sport: b.port,
            dport,
            proto: key.proto,
            ..FlowKey::default()
        };
        let rev = self.reverse.get(&reply, 0).ok()?;
        let ours = rev.client == key.src
            && rev.client_port == key.sport
            && rev.vip == key.dst
            && rev.vip_port == key.dport;
        ours.then_some(rev.seen_ns)
    }
}
