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
    let _ = writeln!(
        out,
        "Prot LocalAddress:Port Scheduler Mode      Weight  Active      Conns     InPkts    OutPkts      InBytes     OutBytes  State"
    );
    let _ = writeln!(out, "  -> RemoteAddress:Port");
    for l in &s.listeners {
        let _ = writeln!(
            out,
            "{:<4} {:<30} {:>8} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}  {}",
            l.protocol.to_uppercase(),
            format!("{} {} {}", endpoint(&l.vip, l.port), l.scheduler, l.mode),
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
                "  -> {:<30} {:>6} {:>7} {:>10} {:>10} {:>10} {:>12} {:>12}  {}",
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
}
