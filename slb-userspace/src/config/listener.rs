//! One `[[listener]]` with its `[[listener.backend]]`s, and the rules that
//! involve only that listener.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::defaults as d;
use super::error::Errors;
use super::health;
use super::l7;
use super::model::{
    Acl, AclMode, Backend, Forwarding, HealthCheck, L7Settings, Listener, Persistence,
    PersistenceMode, Protocol, Scheduler,
};
use super::raw::{RawAcl, RawBackend, RawListener, RawPersistence};
use super::values::{
    duration_or, family, key, keyword, keyword_or, port, required, u32_or, unicast_ip,
};

/// A listener as far as it could be validated: `None` marks a value that was
/// missing or wrong (and reported). Rules across listeners use what is there.
#[derive(Debug)]
pub(crate) struct Draft {
    pub path: String,
    pub name: Option<String>,
    pub vip: Option<IpAddr>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub scheduler: Option<Scheduler>,
    pub forwarding: Option<Option<Forwarding>>,
    pub idle_timeout: Option<Duration>,
    pub persistence: Option<Option<Persistence>>,
    pub acl: Option<Option<Acl>>,
    pub health_check: Option<Option<HealthCheck>>,
    /// `None` when any backend had an error.
    pub backends: Option<Vec<Backend>>,
    /// `Some(None)` for tcp/udp listeners.
    pub l7: Option<Option<L7Settings>>,
    /// Addresses of the backends (of every group, on http/https listeners)
    /// that have a valid one.
    pub backend_addresses: Vec<IpAddr>,
    /// Health checks on (`enabled` not false), even if their settings are wrong.
    pub checks_health: bool,
}

impl Draft {
    /// The validated listener, when nothing was wrong with it.
    pub(crate) fn finish(self) -> Option<Listener> {
        Some(Listener {
            name: self.name?,
            vip: self.vip?,
            port: self.port?,
            protocol: self.protocol?,
            scheduler: self.scheduler?,
            forwarding: self.forwarding?,
            idle_timeout: self.idle_timeout?,
            persistence: self.persistence?,
            acl: self.acl?,
            health_check: self.health_check?,
            backends: self.backends?,
            l7: self.l7?,
        })
    }

    /// True for a tcp/udp listener with fullnat forwarding.
    pub(crate) fn is_fullnat(&self) -> bool {
        matches!(self.forwarding, Some(Some(Forwarding::FullNat)))
    }

    /// True for a tcp/udp listener.
    pub(crate) fn is_l4(&self) -> bool {
        self.protocol.is_some_and(Protocol::is_l4)
    }
}

pub(crate) fn check(
    raw: &RawListener,
    index: usize,
    base: Option<&Path>,
    errs: &mut Errors,
) -> Draft {
    let path = format!("listener[{index}]");
    let k = |name: &str| key(&path, name);

    let name = required(raw.name.as_ref(), &k("name"), errs).and_then(|n| {
        if n.trim().is_empty() {
            errs.push(k("name"), "must not be empty");
            None
        } else if n.chars().any(char::is_control) {
            // It ends a row of `slb status` and is quoted in logs: a
            // newline or tab there would break them.
            errs.push(
                k("name"),
                format!(
                    "must not contain control characters (got \"{}\")",
                    n.escape_debug()
                ),
            );
            None
        } else {
            Some(n.clone())
        }
    });
    let vip =
        required(raw.vip.as_ref(), &k("vip"), errs).and_then(|v| unicast_ip(v, &k("vip"), errs));
    let listen_port =
        required(raw.port.as_ref(), &k("port"), errs).and_then(|p| port(*p, &k("port"), errs));
    let protocol = keyword_or(
        raw.protocol.as_ref(),
        Protocol::ALL,
        d::PROTOCOL,
        &k("protocol"),
        errs,
    );
    if let (Some(addr), Some(p)) = (vip, protocol) {
        if p.is_l4() && addr.is_loopback() {
            // Traffic to it never arrives on an interface the XDP program
            // is attached to. (The proxy can listen there.)
            errs.push(
                k("vip"),
                format!(
                    "{addr} is a loopback address: a {p} listener's traffic must reach the \
                     XDP program from the network (http/https listeners may listen on loopback)"
                ),
            );
        }
    }
    // http/https listeners have keys and schedulers of their own.
    let l7_draft = match protocol {
        Some(p) if p.is_l7() => {
            let own = l7::Own {
                vip,
                port: listen_port,
            };
            Some(l7::check(raw, p, own, &path, base, errs))
        }
        Some(p) => {
            l7::reject_on_l4(raw, p, &path, errs);
            None
        }
        None => None,
    };
    let scheduler = match &l7_draft {
        Some(l7d) => l7d.scheduler,
        None => keyword_or(
            raw.scheduler.as_ref(),
            Scheduler::ALL,
            d::SCHEDULER,
            &k("scheduler"),
            errs,
        ),
    };

    let forwarding = match (&raw.forwarding, protocol) {
        (Some(_), Some(p)) if p.is_l7() => {
            errs.push(
                k("forwarding"),
                format!("only for tcp/udp listeners (a {p} listener is served by the proxy)"),
            );
            None
        }
        (Some(t), _) => keyword(t, Forwarding::ALL, &k("forwarding"), errs).map(Some),
        (None, Some(p)) => Some(p.is_l4().then_some(d::FORWARDING)),
        (None, None) => None,
    };

    let idle_timeout = match (&raw.idle_timeout, protocol) {
        (None, None) => None,
        (value, p) => duration_or(
            value.as_ref(),
            p.map(d::idle_timeout).unwrap_or_default(),
            d::IDLE_TIMEOUT_MIN,
            d::IDLE_TIMEOUT_MAX,
            &k("idle_timeout"),
            errs,
        ),
    };

    let persistence = match &raw.persistence {
        None => Some(None),
        // Cookie persistence of http/https listeners is in `l7`.
        Some(_) if l7_draft.is_some() => Some(None),
        Some(p) => check_persistence(p, protocol, &k("persistence"), errs).map(Some),
    };
    let acl = match &raw.acl {
        None => Some(None),
        Some(a) => check_acl(a, &k("acl"), errs).map(Some),
    };
    if let (Some(Some(a)), Some(addr)) = (&acl, vip) {
        // Clients reach the VIP in its own family (the dataplane applies
        // only those prefixes, the proxy's socket is bound to the VIP):
        // such an allow-list would shut the listener.
        let of_family = a.cidrs.iter().any(|n| n.addr().is_ipv4() == addr.is_ipv4());
        if a.mode == AclMode::Allow && !of_family {
            errs.push(
                k("acl.cidrs"),
                format!(
                    "no {fam} prefix: this allow-list would refuse every client of the {fam} \
                     vip {addr}",
                    fam = family(addr)
                ),
            );
        }
    }
    let health_check = health::check(
        raw.health_check.as_ref(),
        protocol,
        &k("health_check"),
        errs,
    );

    let redirect_only = l7_draft.as_ref().is_some_and(|l| l.redirect_only);
    let mut draft = Draft {
        path: path.clone(),
        name,
        vip,
        port: listen_port,
        protocol,
        scheduler,
        forwarding,
        idle_timeout,
        persistence,
        acl,
        health_check,
        backends: None,
        l7: match &l7_draft {
            Some(l7d) => l7d.settings.clone().map(Some),
            None => Some(None),
        },
        backend_addresses: Vec::new(),
        // A redirect-only listener has no backend to check.
        checks_health: !redirect_only
            && raw
                .health_check
                .as_ref()
                .and_then(|h| h.enabled)
                .unwrap_or(true),
    };
    check_backends(&raw.backend, redirect_only, &mut draft, errs);
    if let Some(l7d) = l7_draft {
        draft.backend_addresses.extend(l7d.group_addresses);
    }
    draft
}

fn check_persistence(
    raw: &RawPersistence,
    protocol: Option<Protocol>,
    path: &str,
    errs: &mut Errors,
) -> Option<Persistence> {
    let mode_path = key(path, "mode");
    let mode = required(raw.mode.as_ref(), &mode_path, errs).and_then(|m| {
        if m == "insert_cookie" || m == "rewrite_cookie" {
            errs.push(
                &mode_path,
                format!("\"{m}\" (L7 persistence) is not supported yet; only \"source_ip\" on tcp/udp listeners"),
            );
            return None;
        }
        keyword(m, PersistenceMode::ALL, &mode_path, errs)
    });
    if let (Some(PersistenceMode::SourceIp), Some(p)) = (mode, protocol) {
        if p.is_l7() {
            errs.push(
                &mode_path,
                format!("\"source_ip\" persistence is only for tcp/udp listeners (this is a {p} listener)"),
            );
            return None;
        }
    }
    if raw.cookie.is_some() {
        errs.push(
            key(path, "cookie"),
            "unknown field `cookie` here: only the cookie modes of http/https listeners take it",
        );
    }
    let timeout = duration_or(
        raw.timeout.as_ref(),
        d::PERSISTENCE_TIMEOUT,
        d::PERSISTENCE_TIMEOUT_MIN,
        d::PERSISTENCE_TIMEOUT_MAX,
        &key(path, "timeout"),
        errs,
    );
    Some(Persistence {
        mode: mode?,
        timeout: timeout?,
    })
}

fn check_acl(raw: &RawAcl, path: &str, errs: &mut Errors) -> Option<Acl> {
    let mode_path = key(path, "mode");
    let mode = required(raw.mode.as_ref(), &mode_path, errs)
        .and_then(|m| keyword(m, AclMode::ALL, &mode_path, errs));
    let cidrs_path = key(path, "cidrs");
    let cidrs = required(raw.cidrs.as_ref(), &cidrs_path, errs).and_then(|list| {
        if list.is_empty() {
            errs.push(&cidrs_path, "must list at least one CIDR");
            return None;
        }
        let before = errs.len();
        let nets: Vec<IpNet> = list
            .iter()
            .enumerate()
            .filter_map(|(i, text)| parse_cidr(text, &format!("{cidrs_path}[{i}]"), errs))
            .collect();
        (errs.len() == before).then_some(nets)
    });
    Some(Acl {
        mode: mode?,
        cidrs: cidrs?,
    })
}

/// `"10.1.0.0/16"`, `"2001:db8::/32"`, or a bare address (a /32 or /128).
fn parse_cidr(text: &str, path: &str, errs: &mut Errors) -> Option<IpNet> {
    let net = match (text.parse::<IpNet>(), text.parse::<IpAddr>()) {
        (Ok(net), _) => net,
        (_, Ok(addr)) => IpNet::from(addr),
        _ => {
            errs.push(
                path,
                format!("must be a CIDR such as \"10.1.0.0/16\" or an address (got \"{text}\")"),
            );
            return None;
        }
    };
    if net.trunc() != net {
        errs.push(
            path,
            format!("{text} has host bits set (did you mean {}?)", net.trunc()),
        );
        return None;
    }
    // IPv4 clients are matched as IPv4 (as addresses elsewhere in the
    // file, the IPv4-mapped form is refused, not silently reinterpreted).
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            errs.push(
                path,
                format!(
                    "IPv4-mapped IPv6 prefix: write it as {v4}/{}",
                    v6.prefix_len() - 96
                ),
            );
            return None;
        }
    }
    Some(net)
}

/// The address, port and weight of a backend table at `bpath` (listener or
/// L7 group backend alike), each `None` when missing or invalid.
pub(super) fn backend_fields(
    b: &RawBackend,
    bpath: &str,
    errs: &mut Errors,
) -> (Option<IpAddr>, Option<u16>, Option<u32>) {
    let k = |name: &str| key(bpath, name);
    let address = required(b.address.as_ref(), &k("address"), errs)
        .and_then(|a| unicast_ip(a, &k("address"), errs));
    let bport =
        required(b.port.as_ref(), &k("port"), errs).and_then(|p| port(*p, &k("port"), errs));
    let weight = u32_or(b.weight, d::WEIGHT, 0, d::WEIGHT_MAX, &k("weight"), errs);
    (address, bport, weight)
}

/// `redirect_only`: an http listener that redirects every request to https
/// may have no backend.
fn check_backends(raw: &[RawBackend], redirect_only: bool, draft: &mut Draft, errs: &mut Errors) {
    let path = draft.path.clone();
    if raw.is_empty() && redirect_only {
        draft.backends = Some(Vec::new());
        return;
    }
    if raw.is_empty() {
        errs.push(
            key(&path, "backend"),
            "at least one [[listener.backend]] is required",
        );
        return;
    }
    let before = errs.len();
    let l4 = draft.protocol.map(Protocol::is_l4);
    let dr = matches!(draft.forwarding, Some(Some(Forwarding::Dr)));
    let mut backends = Vec::with_capacity(raw.len());
    // (index, address, port) of the backends checked so far, for duplicates.
    let mut seen: Vec<(usize, IpAddr, u16)> = Vec::new();

    for (i, b) in raw.iter().enumerate() {
        let bpath = format!("{path}.backend[{i}]");
        let k = |name: &str| key(&bpath, name);
        let (address, bport, weight) = backend_fields(b, &bpath, errs);

        if let (Some(addr), Some(true)) = (address, l4) {
            // The program sends packets out of an interface; a loopback
            // address is nowhere to send them.
            if addr.is_loopback() {
                errs.push(
                    k("address"),
                    format!(
                        "{addr} is a loopback address: tcp/udp listeners forward packets to \
                         backends over the network (http/https listeners may proxy to loopback)"
                    ),
                );
            }
        }
        if let (Some(addr), Some(vip)) = (address, draft.vip) {
            if l4 == Some(true) && addr.is_ipv4() != vip.is_ipv4() {
                errs.push(
                    k("address"),
                    format!(
                        "{} backend for an {} vip ({vip}): tcp/udp listeners do not translate \
                         between address families (http/https listeners may mix them)",
                        family(addr),
                        family(vip)
                    ),
                );
            } else if addr == vip && (l4 == Some(true) || bport == draft.port) {
                errs.push(k("address"), format!("is the listener's own vip ({vip})"));
            }
        }
        if let (true, Some(p), Some(lp)) = (dr, bport, draft.port) {
            if p != lp {
                errs.push(
                    k("port"),
                    format!(
                        "must equal the listener port ({lp}) with forwarding = \"dr\" (got {p})"
                    ),
                );
            }
        }
        if let (Some(addr), Some(p)) = (address, bport) {
            if let Some((j, _, _)) = seen.iter().find(|(_, a, q)| *a == addr && *q == p) {
                errs.push(
                    bpath.clone(),
                    format!(
                        "duplicate of backend[{j}] ({})",
                        std::net::SocketAddr::new(addr, p)
                    ),
                );
            } else {
                seen.push((i, addr, p));
            }
        }
        if let Some(addr) = address {
            draft.backend_addresses.push(addr);
        }
        if let (Some(address), Some(port), Some(weight)) = (address, bport, weight) {
            backends.push(Backend {
                address,
                port,
                weight,
                backup: b.backup.unwrap_or(false),
            });
        }
    }
    if errs.len() == before {
        draft.backends = Some(backends);
    }
}
