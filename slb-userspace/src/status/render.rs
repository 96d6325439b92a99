//! The human-readable status table, laid out like `ipvsadm -L -n --stats`.
use super::{BackendStatus, Snapshot};
use std::fmt::Write;

fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn state(b: &BackendStatus) -> String {
    match &b.reason {
        Some(r) if b.state != super::BackendState::Drained => format!("{}: {r}", b.state.as_str()),
        _ => b.state.as_str().to_owned(),
    }
}

/// The heading of the address column of listener rows.
const HEADING: &str = "LocalAddress:Port Scheduler Mode";

/// Renders a snapshot as text: the columns of `ipvsadm -L -n --stats`
/// (every counter `/metrics` exports per listener and backend), weight,
/// active flows and state; a listener's row ends with its name, the
/// `listener` label of its series in `/metrics`.
pub fn render_table(s: &Snapshot) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "SLB generation {}, {} flows in table",
        s.generation, s.flows
    );
    let services: Vec<String> = s
        .listeners
        .iter()
        .map(|l| format!("{} {} {}", endpoint(&l.vip, l.port), l.scheduler, l.mode))
        .collect();
    // One width for the address column of every row, so that the numbers
    // stand under their headings also with long IPv6 addresses.
    let w = services
        .iter()
        .map(String::len)
        .chain(
            s.listeners
                .iter()
                .flat_map(|l| l.backends.iter().map(|b| b.address.len())),
        )
        .fold(HEADING.len(), usize::max);
    let _ = writeln!(
        out,
        "Prot {HEADING:<w$} {:>6} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}  State",
        "Weight", "Active", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for (l, service) in s.listeners.iter().zip(&services) {
        let _ = writeln!(
            out,
            "{:<4} {service:<w$} {:>6} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}  {}",
            l.protocol.to_uppercase(),
            "",
            "",
            l.counters.conns,
            l.counters.packets_in,
            l.counters.packets_out,
            l.counters.bytes_in,
            l.counters.bytes_out,
            l.name
        );
        for b in &l.backends {
            let _ = writeln!(
                out,
                "  -> {:<w$} {:>6} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}  {}",
                b.address,
                b.weight,
                b.active_flows,
                b.counters.conns,
                b.counters.packets_in,
                b.counters.packets_out,
                b.counters.bytes_in,
                b.counters.bytes_out,
                state(b)
            );
        }
        if let Some(r) = &l.requests {
            let _ = write!(
                out,
                "     requests: 1xx {}, 2xx {}, 3xx {}, 4xx {}, 5xx {}; connections refused by the ACL {}",
                r.class_1xx, r.class_2xx, r.class_3xx, r.class_4xx, r.class_5xx, r.acl_refused
            );
            if l.protocol == "https" {
                let _ = write!(out, ", TLS handshakes failed {}", r.tls_failed);
            }
            let _ = writeln!(out);
        }
        let c = &l.counters;
        if c.drop_no_backend + c.drop_acl + c.drop_no_port > 0 {
            let _ = writeln!(
                out,
                "     dropped: no backend {}, acl {}, no source port {}",
                c.drop_no_backend, c.drop_acl, c.drop_no_port
            );
        }
    }
    let g = &s.global;
    let _ = writeln!(
        out,
        "global: not for us {}, parse errors {}, no backend {}, flow misses {}, via kernel (no neighbour) {}, no route {}, unsupported {}, ICMP translated {}, too big: answered {} dropped {}",
        g.not_for_us,
        g.parse_errors,
        g.no_backend,
        g.flow_misses,
        g.fib_pass,
        g.fib_drop,
        g.unsupported,
        g.icmp_translated,
        g.icmp_too_big,
        g.too_big_drops
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::*;

    #[test]
    fn table_lists_listeners_backends_and_states() {
        let s = Snapshot {
            generation: 3,
            flows: 12,
            global: GlobalCounters::default(),
            listeners: vec![ListenerStatus {
                name: "web".into(),
                vip: "10.0.0.10".into(),
                port: 80,
                protocol: "tcp".into(),
                scheduler: "maglev".into(),
                mode: "fullnat".into(),
                counters: Counters {
                    conns: 7,
                    packets_in: 50,
                    packets_out: 40,
                    bytes_in: 5000,
                    bytes_out: 4000,
                    ..Default::default()
                },
                requests: None,
                backends: vec![
                    BackendStatus {
                        address: "10.0.1.11:8080".into(),
                        weight: 100,
                        backup: false,
                        state: BackendState::Up,
                        since: None,
                        reason: None,
                        active_flows: 2,
                        counters: Counters {
                            conns: 5,
                            packets_in: 30,
                            packets_out: 20,
                            bytes_in: 3000,
                            bytes_out: 2000,
                            ..Default::default()
                        },
                    },
                    BackendStatus {
                        address: "10.0.1.12:8080".into(),
                        weight: 100,
                        backup: false,
                        state: BackendState::Down,
                        since: Some(1),
                        reason: Some("connect refused (3/3)".into()),
                        active_flows: 0,
                        counters: Counters::default(),
                    },
                ],
            }],
        };
        let mut s = s;
        let mut www = s.listeners[0].clone();
        www.protocol = "http".into();
        www.mode = "proxy".into();
        www.requests = Some(RequestCounts {
            class_2xx: 40,
            class_5xx: 2,
            acl_refused: 1,
            ..Default::default()
        });
        s.listeners.push(www.clone());
        let mut wss = www;
        wss.protocol = "https".into();
        wss.requests = Some(RequestCounts {
            tls_failed: 3,
            ..Default::default()
        });
        s.listeners.push(wss);
        let t = render_table(&s);
        assert!(
            t.contains(
                "requests: 1xx 0, 2xx 40, 3xx 0, 4xx 0, 5xx 2; connections refused by the ACL 1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "requests: 1xx 0, 2xx 0, 3xx 0, 4xx 0, 5xx 0; connections refused by the ACL 0, TLS handshakes failed 3\n"
            ),
            "{t}"
        );
        assert_eq!(
            t.matches("requests:").count(),
            2,
            "only http/https listeners: {t}"
        );
        assert!(t.contains("TCP  10.0.0.10:80 maglev fullnat"), "{t}");
        // Every counter `/metrics` has is in the table too, OutPkts
        // included, and a listener's row names it (its `listener` label).
        assert!(t.lines().nth(1).unwrap().contains(" OutPkts "), "{t}");
        let row = |needle: &str| -> Vec<String> {
            let line = t.lines().find(|l| l.contains(needle)).unwrap();
            line.split_whitespace().map(str::to_owned).collect()
        };
        assert_eq!(
            row("TCP  10.0.0.10:80")[4..],
            ["7", "50", "40", "5000", "4000", "web"],
            "{t}"
        );
        assert_eq!(
            row("-> 10.0.1.11:8080")[2..],
            ["100", "2", "5", "30", "20", "3000", "2000", "up"],
            "{t}"
        );
        assert!(t.contains("-> 10.0.1.12:8080"), "{t}");
        assert!(t.contains("down: connect refused (3/3)"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.contains("10.0.1.11:8080") && l.trim_end().ends_with("up")),
            "{t}"
        );
    }
    /// Every number stands under its heading (right-aligned to it), in
    /// listener and backend rows alike, also when an IPv6 address is
    /// longer than the address column's heading.
    #[test]
    fn numbers_stand_under_their_headings() {
        let backend = |address: &str| BackendStatus {
            address: address.into(),
            weight: 100,
            backup: false,
            state: BackendState::Up,
            since: None,
            reason: None,
            active_flows: 12345,
            counters: Counters {
                conns: 1234567,
                packets_in: 2,
                packets_out: 3,
                bytes_in: 123456789,
                bytes_out: 5,
                ..Default::default()
            },
        };
        let listener = |vip: &str, backends| ListenerStatus {
            name: "web".into(),
            vip: vip.into(),
            port: 443,
            protocol: "tcp".into(),
            scheduler: "maglev".into(),
            mode: "fullnat".into(),
            counters: Counters {
                conns: 7654321,
                packets_in: 6,
                packets_out: 7,
                bytes_in: 987654321,
                bytes_out: 8,
                ..Default::default()
            },
            requests: None,
            backends,
        };
        let s = Snapshot {
            generation: 1,
            flows: 0,
            global: GlobalCounters::default(),
            listeners: vec![
                listener("10.0.0.10", vec![backend("10.0.1.11:8080")]),
                listener(
                    "2001:db8:1234:5678:9abc:def0:1234:5678",
                    vec![
                        backend("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535"),
                        backend("[fd00::2]:80"),
                    ],
                ),
            ],
        };
        let t = render_table(&s);
        let lines: Vec<&str> = t.lines().collect();
        let ends = |line: &str| -> Vec<usize> {
            let mut v = Vec::new();
            let mut prev = ' ';
            for (i, c) in line.char_indices() {
                if c == ' ' && prev != ' ' {
                    v.push(i);
                }
                prev = c;
            }
            v
        };
        let heading = lines[1];
        let at = |name: &str| heading.find(name).unwrap() + name.len();
        let rows: Vec<&str> = lines[3..]
            .iter()
            .copied()
            .filter(|l| l.starts_with("TCP ") || l.starts_with("  -> "))
            .collect();
        assert_eq!(rows.len(), 5, "{t}");
        for row in rows {
            let e = ends(row);
            // The last five numbers before the name or state.
            let n = e.len();
            let got = &e[n - 5..];
            let want: Vec<usize> = ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
                .iter()
                .map(|h| at(h))
                .collect();
            assert_eq!(got, want, "{row:?} in\n{t}");
            if row.starts_with("  -> ") {
                assert_eq!(&e[n - 7..n - 5], [at("Weight"), at("Active")], "{t}");
            }
        }
    }
}
