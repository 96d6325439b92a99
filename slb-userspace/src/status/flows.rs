//! What `slb flows` shows: the connection table, one line per connection,
//! like `ipvsadm -L -n -c` (state and time to expiry included), and which
//! entries a request asks for.

use serde::{Deserialize, Serialize};
use slb_common::flow::{entry_timeout_s, FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT, FLOW_F_RST};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// Entries listed when the request names no limit: enough to read, little
/// enough that a full 1M-entry table does not flood a terminal.
pub const DEFAULT_LIMIT: usize = 1000;

const NS: u64 = 1_000_000_000;

/// Which connections to list. Empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    pub listener: Option<String>,
    pub client: Option<IpAddr>,
    /// A backend address, with or without its port.
    pub backend: Option<BackendMatch>,
    /// Also entries that are over: past their timeout, or whose backend's
    /// id went to another backend (their next packet is scheduled afresh;
    /// a removed backend's flows run on until then).
    pub all: bool,
    /// At most this many entries (0: every one).
    pub limit: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendMatch {
    Addr(IpAddr),
    Socket(SocketAddr),
}

impl std::str::FromStr for BackendMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(BackendMatch::Socket(SocketAddr::new(
                a.ip().to_canonical(),
                a.port(),
            )));
        }
        parse_address(s).map(BackendMatch::Addr).map_err(|_| {
            format!("{s:?} is not an address or address:port (IPv6 with a port: [addr]:port)")
        })
    }
}

/// An address as the listings print it or as typed: an IPv6 one also in
/// brackets (`[fd00::2]`, the form `slb status` and `slb flows` show it
/// in), an IPv4-mapped one (`::ffff:10.0.0.2`) as the IPv4 address the
/// tables hold, so that it matches instead of silently listing nothing.
pub fn parse_address(s: &str) -> Result<IpAddr, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    match bare.parse::<IpAddr>() {
        Ok(a) if bare.len() == s.len() || a.is_ipv6() => Ok(a.to_canonical()),
        _ => Err(format!("{s:?} is not an IP address")),
    }
}

impl BackendMatch {
    fn matches(&self, backend: SocketAddr) -> bool {
        match self {
            BackendMatch::Addr(a) => backend.ip() == *a,
            BackendMatch::Socket(s) => backend == *s,
        }
    }
}

/// One connection-table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub listener: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    /// The FULLNAT source address and port the backend sees; `None` in
    /// `nat` and `dr` mode (the backend sees the client).
    pub source: Option<SocketAddr>,
    pub backend: SocketAddr,
    /// `fullnat`, `nat` or `dr`: the mode the flow was set up with.
    pub mode: String,
    /// LVS's names: `ESTABLISHED`; `FIN_WAIT` (the client sent a FIN),
    /// `CLOSE_WAIT` (the backend did), `TIME_WAIT` (both did), `CLOSE`
    /// (an RST); `UDP`; `EXPIRED` for an entry that is over (`--all`).
    pub state: String,
    /// Seconds since the last packet either way.
    pub idle_s: u64,
    /// Seconds until the entry expires without traffic.
    pub expire_s: u64,
}

/// A listing: the entries shown, and how many matched in all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowList {
    pub flows: Vec<FlowEntry>,
    pub matched: u64,
}

/// What the agent knows about one table entry, before filtering.
pub struct RawFlow {
    pub listener: String,
    pub proto_tcp: bool,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub source: Option<SocketAddr>,
    pub backend: SocketAddr,
    pub mode: &'static str,
    /// `FLOW_F_*`.
    pub flags: u16,
    /// Since the last packet either way.
    pub idle_ns: u64,
    /// The listener's idle timeout.
    pub idle_timeout_ns: u64,
    /// The backend slot no longer holds the backend the flow was scheduled
    /// to (a reload removed it and its id went to another).
    pub backend_gone: bool,
}

impl RawFlow {
    /// The timeout the dataplane applies to this entry (`entry_timeout_s`:
    /// the listener's in whole seconds, rounded up as the dataplane holds
    /// it, or the short one of a connection that is over).
    fn timeout_ns(&self) -> u64 {
        let idle_s = u32::try_from(self.idle_timeout_ns.div_ceil(NS)).unwrap_or(u32::MAX);
        u64::from(entry_timeout_s(self.flags, idle_s)) * NS
    }

    /// In ns, as the dataplane compares: by whole seconds an entry up to a
    /// second past its timeout would still be listed as alive.
    fn is_over(&self) -> bool {
        self.backend_gone || self.idle_ns > self.timeout_ns()
    }

    fn state(&self) -> &'static str {
        if self.is_over() {
            return "EXPIRED";
        }
        if !self.proto_tcp {
            return "UDP";
        }
        let fin_c = self.flags & FLOW_F_FIN_CLIENT != 0;
        let fin_b = self.flags & FLOW_F_FIN_BACKEND != 0;
        if self.flags & FLOW_F_RST != 0 {
            "CLOSE"
        } else if fin_c && fin_b {
            "TIME_WAIT"
        } else if fin_c {
            "FIN_WAIT"
        } else if fin_b {
            "CLOSE_WAIT"
        } else {
            "ESTABLISHED"
        }
    }

    fn entry(self) -> FlowEntry {
        let state = self.state().to_owned();
        let expire_s = if self.is_over() {
            0
        } else {
            self.timeout_ns().saturating_sub(self.idle_ns) / NS
        };
        FlowEntry {
            listener: self.listener,
            protocol: if self.proto_tcp { "tcp" } else { "udp" }.to_owned(),
            client: self.client,
            vip: self.vip,
            source: self.source,
            backend: self.backend,
            mode: self.mode.to_owned(),
            state,
            idle_s: self.idle_ns / NS,
            expire_s,
        }
    }
}

impl FlowFilter {
    fn matches(&self, f: &RawFlow) -> bool {
        (self.all || !f.is_over())
            && self.listener.as_ref().is_none_or(|l| *l == f.listener)
            && self.client.is_none_or(|c| f.client.ip() == c)
            && self.backend.as_ref().is_none_or(|b| b.matches(f.backend))
    }
}

/// The listing's order: by listener, client and port, then VIP.
fn order(a: &FlowEntry, b: &FlowEntry) -> std::cmp::Ordering {
    (&a.listener, a.client.ip(), a.client.port(), a.vip).cmp(&(
        &b.listener,
        b.client.ip(),
        b.client.port(),
        b.vip,
    ))
}

/// Collects the entries `filter` asks for, sorted by listener, client and
/// port; `matched` counts every match, also those past the limit. A
/// limited listing is the start of the full one: the table is walked in
/// hash order, so the first matches met would be a different sample on
/// every call. Entries are offered one at a time as the table walk meets
/// them, so that what is kept is at most twice the limit, not the table.
pub struct Selection<'a> {
    filter: &'a FlowFilter,
    limit: usize,
    list: FlowList,
}

impl<'a> Selection<'a> {
    pub fn new(filter: &'a FlowFilter) -> Selection<'a> {
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        Selection {
            filter,
            limit,
            list: FlowList::default(),
        }
    }

    pub fn offer(&mut self, f: RawFlow) {
        if !self.filter.matches(&f) {
            return;
        }
        let list = &mut self.list;
        list.matched += 1;
        list.flows.push(f.entry());
        // Trimmed now and then rather than kept whole: a limited listing
        // of a million-entry table holds at most twice the limit.
        if list.flows.len() >= self.limit.saturating_mul(2) {
            list.flows.sort_by(order);
            list.flows.truncate(self.limit);
        }
    }

    pub fn finish(mut self) -> FlowList {
        self.list.flows.sort_by(order);
        self.list.flows.truncate(self.limit);
        self.list
    }
}

/// [`Selection`] over `flows`.
pub fn select(filter: &FlowFilter, flows: impl IntoIterator<Item = RawFlow>) -> FlowList {
    let mut s = Selection::new(filter);
    flows.into_iter().for_each(|f| s.offer(f));
    s.finish()
}

/// Renders a listing as text. The address columns are as wide as their
/// longest entry (at least an IPv4 `address:port`), so that the columns
/// stay under their headings also with IPv6 addresses.
pub fn render_flows(list: &FlowList) -> String {
    let mut out = String::new();
    let rows: Vec<[String; 4]> = list
        .flows
        .iter()
        .map(|f| {
            [
                f.client.to_string(),
                f.vip.to_string(),
                f.source.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                f.backend.to_string(),
            ]
        })
        .collect();
    // "255.255.255.255:65535" and a space.
    let mut w = [22usize; 4];
    for row in &rows {
        for (w, cell) in w.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let [wc, wv, ws, wb] = w;
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "Prot {:<wc$} {:<wv$} {:<ws$} {:<wb$} Mode    State        Idle  Expire  Listener",
        "Client", "VIP", "Source", "Backend"
    );
    for (f, [client, vip, source, backend]) in list.flows.iter().zip(&rows) {
        let _ = writeln!(
            out,
            "{:<4} {client:<wc$} {vip:<wv$} {source:<ws$} {backend:<wb$} {:<7} {:<11} {:>5}s {:>6}s {}",
            f.protocol.to_uppercase(),
            f.mode,
            f.state,
            f.idle_s,
            f.expire_s,
            f.listener
        );
    }
    let shown = list.flows.len() as u64;
    if list.matched > shown {
        let _ = writeln!(
            out,
            "... {} more matching connection(s) not shown (--limit 0 lists all)",
            list.matched - shown
        );
    }
    let _ = writeln!(out, "{} connection(s)", list.matched);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripts read `slb flows --json` by field name: the README's
    /// "Connections" section names every one of them.
    #[test]
    fn every_json_field_is_in_the_readme() {
        let list = FlowList {
            flows: vec![FlowEntry {
                listener: "web".into(),
                protocol: "tcp".into(),
                client: "10.0.0.2:41822".parse().unwrap(),
                vip: "10.0.0.10:80".parse().unwrap(),
                source: None,
                backend: "10.0.1.11:8080".parse().unwrap(),
                mode: "dr".into(),
                state: "ESTABLISHED".into(),
                idle_s: 3,
                expire_s: 897,
            }],
            matched: 1,
        };
        let readme = include_str!("../../../README.md");
        let start = readme.find("### Connections").unwrap();
        let end = start + readme[start..].find("\n## ").unwrap();
        let section = &readme[start..end];
        let value = serde_json::to_value(&list).unwrap();
        let mut fields: Vec<&String> = value.as_object().unwrap().keys().collect();
        fields.extend(value["flows"][0].as_object().unwrap().keys());
        let missing: Vec<&&String> = fields
            .iter()
            .filter(|f| !section.contains(&format!("`{f}`")))
            .collect();
        assert!(missing.is_empty(), "not in the README: {missing:?}");
    }

    fn raw(client: &str, flags: u16, idle_s: u64) -> RawFlow {
        RawFlow {
            listener: "web".into(),
            proto_tcp: true,
            client: client.parse().unwrap(),
            vip: "10.0.0.10:80".parse().unwrap(),
            source: Some("100.64.0.10:40000".parse().unwrap()),
            backend: "10.0.1.11:8080".parse().unwrap(),
            mode: "fullnat",
            flags,
            idle_ns: idle_s * NS,
            idle_timeout_ns: 900 * NS,
            backend_gone: false,
        }
    }

    #[test]
    fn states_and_expiry_follow_the_dataplane_timeouts() {
        let e = raw("10.0.0.2:1000", 0, 100).entry();
        assert_eq!((e.state.as_str(), e.expire_s), ("ESTABLISHED", 800));
        let e = raw("10.0.0.2:1000", FLOW_F_FIN_CLIENT, 5).entry();
        assert_eq!((e.state.as_str(), e.expire_s), ("FIN_WAIT", 895));
        let e = raw("10.0.0.2:1000", FLOW_F_FIN_BACKEND, 5).entry();
        assert_eq!(e.state, "CLOSE_WAIT");
        // Over: the short timeout.
        let e = raw("10.0.0.2:1000", FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND, 4).entry();
        assert_eq!((e.state.as_str(), e.expire_s), ("TIME_WAIT", 6));
        let e = raw("10.0.0.2:1000", FLOW_F_RST, 11).entry();
        assert_eq!((e.state.as_str(), e.expire_s), ("EXPIRED", 0));
        let mut u = raw("10.0.0.2:1000", 0, 1);
        u.proto_tcp = false;
        assert_eq!(u.entry().state, "UDP");
    }

    #[test]
    fn filters_hide_what_is_over_and_count_past_the_limit() {
        let flows = || {
            let mut gone = raw("10.0.0.4:1000", 0, 1);
            gone.backend_gone = true;
            vec![
                raw("10.0.0.3:1000", 0, 1),
                raw("10.0.0.2:2000", 0, 1),
                raw("10.0.0.2:1000", 0, 1000),
                gone,
            ]
        };
        let live = select(&FlowFilter::default(), flows());
        assert_eq!(live.matched, 2);
        let clients: Vec<String> = live.flows.iter().map(|f| f.client.to_string()).collect();
        assert_eq!(clients, ["10.0.0.2:2000", "10.0.0.3:1000"]);

        let all = FlowFilter {
            all: true,
            ..Default::default()
        };
        assert_eq!(select(&all, flows()).matched, 4);

        let one = FlowFilter {
            client: Some("10.0.0.2".parse().unwrap()),
            limit: 1,
            all: true,
            ..Default::default()
        };
        let l = select(&one, flows());
        assert_eq!((l.matched, l.flows.len()), (2, 1));
        let text = render_flows(&l);
        assert!(text.contains("1 more matching"), "{text}");
        assert!(text.ends_with("2 connection(s)\n"), "{text}");

        let by_backend = |b: &str| FlowFilter {
            backend: Some(b.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(select(&by_backend("10.0.1.11"), flows()).matched, 2);
        assert_eq!(select(&by_backend("10.0.1.11:8080"), flows()).matched, 2);
        assert_eq!(select(&by_backend("10.0.1.11:80"), flows()).matched, 0);
        let other = FlowFilter {
            listener: Some("dns".into()),
            ..Default::default()
        };
        assert_eq!(select(&other, flows()).matched, 0);
    }

    /// A limited listing is the start of the full one (the smallest by
    /// listener and client), not whichever entries the table walk met
    /// first.
    #[test]
    fn a_limited_listing_is_the_start_of_the_sorted_one() {
        let flows = || {
            (0..50u8)
                .rev()
                .map(|i| raw(&format!("10.0.0.{}:1000", i + 1), 0, 1))
                .collect::<Vec<_>>()
        };
        let full = select(&FlowFilter::default(), flows());
        for limit in [1, 3, 20] {
            let part = select(
                &FlowFilter {
                    limit,
                    ..Default::default()
                },
                flows(),
            );
            assert_eq!(part.matched, 50);
            assert_eq!(part.flows[..], full.flows[..limit], "limit {limit}");
        }
    }

    /// Over by the dataplane's rule (idle longer than the timeout, in ns),
    /// not only once a whole second past it.
    #[test]
    fn an_entry_a_fraction_of_a_second_past_its_timeout_is_over() {
        let mut f = raw("10.0.0.2:1000", 0, 900);
        f.idle_ns += 500_000_000;
        let e = f.entry();
        assert_eq!(
            (e.state.as_str(), e.expire_s, e.idle_s),
            ("EXPIRED", 0, 900)
        );
        // Exactly at the timeout it is not (the dataplane's `>`).
        let e = raw("10.0.0.2:1000", 0, 900).entry();
        assert_eq!((e.state.as_str(), e.expire_s), ("ESTABLISHED", 0));
    }

    #[test]
    fn table_shows_the_source_the_backend_sees() {
        let l = select(
            &FlowFilter::default(),
            vec![raw("10.0.0.2:1000", 0, 3), {
                let mut n = raw("10.0.0.3:1000", 0, 3);
                n.source = None;
                n.mode = "nat";
                n
            }],
        );
        let text = render_flows(&l);
        let line = |c: &str| text.lines().find(|l| l.contains(c)).unwrap().to_owned();
        let f = line("10.0.0.2:1000");
        assert!(f.starts_with("TCP  10.0.0.2:1000"), "{f}");
        assert!(f.contains("100.64.0.10:40000"), "{f}");
        assert!(f.contains("ESTABLISHED"), "{f}");
        assert!(f.trim_end().ends_with("web"), "{f}");
        assert!(line("10.0.0.3:1000").contains(" - "), "{text}");
    }

    /// The columns stay under their headings with IPv6 addresses longer
    /// than an IPv4 `address:port`.
    #[test]
    fn columns_stay_aligned_with_ipv6_addresses() {
        let mut v6 = raw("[2001:db8:85a3:8d3:1319:8a2e:370:7348]:54321", 0, 1);
        v6.vip = "[2001:db8::10]:80".parse().unwrap();
        v6.source = Some("[fd00:64::10]:40000".parse().unwrap());
        v6.backend = "[2001:db8:ffff::8080:1]:8080".parse().unwrap();
        let v4 = raw("10.0.0.2:1000", 0, 1);
        let text = render_flows(&select(&FlowFilter::default(), vec![v4, v6]));
        let lines: Vec<&str> = text.lines().collect();
        let head = lines[0];
        for row in lines[1..3].iter().rev() {
            for (heading, cell) in [
                (
                    "VIP",
                    if row.contains("2001") {
                        "[2001:db8::10]:80"
                    } else {
                        "10.0.0.10:80"
                    },
                ),
                (
                    "Backend",
                    if row.contains("2001") {
                        "[2001:db8:ffff::8080:1]:8080"
                    } else {
                        "10.0.1.11:8080"
                    },
                ),
                ("Mode", "fullnat"),
                ("Listener", "web"),
            ] {
                assert_eq!(
                    head.find(heading),
                    row.find(cell),
                    "{heading} over {cell}:\n{text}"
                );
            }
        }
    }
}
