//! Raw → validated model: runs the per-table checks, then the rules that
//! relate several tables, collecting every error.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use slb_common::limits::{MAX_ACL_ENTRIES, MAX_BACKENDS, MAX_LISTENERS, MAX_WLC_BACKENDS};

use super::agent::{self, AgentDraft};
use super::error::{ConfigErrors, Errors};
use super::listener::{self, Draft};
use super::model::{Config, Protocol, Scheduler};
use super::raw::RawConfig;

/// The error of an https listener without a certificate.
pub(crate) const NO_CERTIFICATE: &str =
    "an https listener needs at least one [[listener.certificate]] with cert and key";

/// `base`: the directory relative file names (certificates) are taken from.
/// `certificates_required`: an https listener without a certificate is an
/// error (the proxy's requirement; see `Config::require_certificates`).
pub(crate) fn validate(
    raw: &RawConfig,
    base: Option<&Path>,
    certificates_required: bool,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errors::default();
    let agent = agent::check(&raw.agent, &mut errs);
    let drafts: Vec<Draft> = raw
        .listener
        .iter()
        .enumerate()
        .map(|(i, l)| listener::check(l, i, base, &mut errs))
        .collect();

    if certificates_required {
        certificates(raw, &drafts, &mut errs);
    }
    unique_names(&drafts, &mut errs);
    unique_addresses(&drafts, &mut errs);
    dataplane_limits(raw, &drafts, &mut errs);
    local_addresses(&agent, &drafts, &mut errs);
    probe_source(&agent, &drafts, &mut errs);
    maglev_size(&agent, &drafts, &mut errs);
    metrics_listen(&agent, &drafts, &mut errs);

    if !errs.is_empty() {
        return Err(errs.into_errors());
    }
    let agent = agent.finish();
    let listeners: Option<Vec<_>> = drafts.into_iter().map(Draft::finish).collect();
    match (agent, listeners) {
        (Some(agent), Some(listeners)) => Ok(Config { agent, listeners }),
        // Every `None` in a draft comes with a reported error.
        _ => Err(ConfigErrors::one(
            "",
            "internal error: incomplete configuration without an error",
        )),
    }
}

/// Every https listener has a certificate.
fn certificates(raw: &RawConfig, drafts: &[Draft], errs: &mut Errors) {
    for (l, r) in drafts.iter().zip(&raw.listener) {
        if l.protocol == Some(Protocol::Https) && r.certificate.is_empty() {
            errs.push(format!("{}.certificate", l.path), NO_CERTIFICATE);
        }
    }
}

fn unique_names(drafts: &[Draft], errs: &mut Errors) {
    for (i, l) in drafts.iter().enumerate() {
        let Some(name) = &l.name else { continue };
        if let Some(j) = drafts[..i]
            .iter()
            .position(|o| o.name.as_ref() == Some(name))
        {
            errs.push(
                format!("{}.name", l.path),
                format!("\"{name}\" is already the name of listener[{j}]"),
            );
        }
    }
}

/// `(vip, port, transport)` is unique: http/https listeners use TCP, so an
/// http and a tcp listener cannot share a VIP and port either.
fn unique_addresses(drafts: &[Draft], errs: &mut Errors) {
    let key = |l: &Draft| Some((l.vip?, l.port?, l.protocol?.transport()));
    for (i, l) in drafts.iter().enumerate() {
        let Some(k) = key(l) else { continue };
        if let Some((j, other)) = drafts[..i]
            .iter()
            .enumerate()
            .find(|(_, o)| key(o) == Some(k))
        {
            errs.push(
                l.path.clone(),
                format!(
                    "{} port {} over {} is already used by listener[{j}]{}",
                    k.0,
                    k.1,
                    k.2,
                    other
                        .name
                        .as_ref()
                        .map(|n| format!(" (\"{n}\")"))
                        .unwrap_or_default()
                ),
            );
        }
    }
}

/// The XDP maps have a fixed number of listener and backend slots, used by
/// tcp/udp listeners only; the program compares every backend of a `wlc`
/// listener per new flow, and takes at most `MAX_WLC_BACKENDS` there.
fn dataplane_limits(raw: &RawConfig, drafts: &[Draft], errs: &mut Errors) {
    let l4: Vec<usize> = drafts
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_l4())
        .map(|(i, _)| i)
        .collect();
    if l4.len() > MAX_LISTENERS as usize {
        errs.push(
            "listener",
            format!(
                "at most {MAX_LISTENERS} tcp/udp listeners (got {})",
                l4.len()
            ),
        );
    }
    for &i in &l4 {
        let n = raw.listener[i].backend.len();
        if drafts[i].scheduler == Some(Scheduler::Wlc) && n > MAX_WLC_BACKENDS as usize {
            errs.push(
                format!("{}.scheduler", drafts[i].path),
                format!(
                    "wlc compares every backend per new flow and takes at most \
                     {MAX_WLC_BACKENDS} backends ({n} given); use maglev or wrr"
                ),
            );
        }
    }
    let backends: usize = l4.iter().map(|&i| raw.listener[i].backend.len()).sum();
    if backends > MAX_BACKENDS as usize {
        errs.push(
            "listener",
            format!("at most {MAX_BACKENDS} backends in all tcp/udp listeners (got {backends})"),
        );
    }
    // The trie holds each CIDR of the VIP's family once per listener (the
    // planner's entries); a file over its size would fail part way
    // through being applied, on a kernel "no space left on device".
    let acl: usize = l4
        .iter()
        .filter_map(|&i| {
            let d = &drafts[i];
            let (Some(Some(acl)), Some(vip)) = (&d.acl, d.vip) else {
                return None;
            };
            let nets: std::collections::BTreeSet<_> = acl
                .cidrs
                .iter()
                .filter(|n| n.addr().is_ipv4() == vip.is_ipv4())
                .collect();
            Some(nets.len())
        })
        .sum();
    if acl > MAX_ACL_ENTRIES as usize {
        errs.push(
            "listener",
            format!("at most {MAX_ACL_ENTRIES} acl.cidrs in all tcp/udp listeners (got {acl})"),
        );
    }
}

/// Address families `[IPv4, IPv6]` a listener's backends use: the VIP's for
/// a tcp/udp listener (a backend of the other family is reported on its own),
/// the backends' for an http/https listener (the VIP's when none is valid).
fn families(l: &Draft) -> [bool; 2] {
    let vip = l.vip.map(|a| [a.is_ipv4(), a.is_ipv6()]);
    if let (true, Some(f)) = (l.is_l4(), vip) {
        return f;
    }
    if l.backend_addresses.is_empty() {
        return vip.unwrap_or([false, false]);
    }
    [
        l.backend_addresses.iter().any(IpAddr::is_ipv4),
        l.backend_addresses.iter().any(IpAddr::is_ipv6),
    ]
}

/// "listener[0]" or "listener[0], listener[3]".
fn paths<'a>(it: impl Iterator<Item = &'a Draft>) -> String {
    it.map(|l| l.path.as_str()).collect::<Vec<_>>().join(", ")
}

/// The listener with a backend at `addr`: the load balancer's own
/// addresses (FULLNAT pool, probe source) cannot be backends too (packets
/// to them would be rewritten to come from themselves, or taken by the
/// agent's own stack).
fn backend_at<'a>(drafts: &'a [Draft], addr: &IpAddr) -> Option<&'a Draft> {
    drafts.iter().find(|l| l.backend_addresses.contains(addr))
}

/// One error per address family that `users` need and `addrs` lacks:
/// "no IPv6 address for {what}listener[2]".
fn missing_families(addrs: &[IpAddr], users: &[&Draft], key: &str, what: &str, errs: &mut Errors) {
    for (fam, name) in [(0, "IPv4"), (1, "IPv6")] {
        let has = addrs.iter().any(|a| a.is_ipv4() == (fam == 0));
        let mut needing = users
            .iter()
            .copied()
            .filter(|l| families(l)[fam])
            .peekable();
        if !has && needing.peek().is_some() {
            errs.push(
                key,
                format!("no {name} address for {what}{}", paths(needing)),
            );
        }
    }
}

/// FULLNAT listeners need a source address of their backends' family; no
/// pool address may be a VIP.
fn local_addresses(agent: &AgentDraft, drafts: &[Draft], errs: &mut Errors) {
    let Some(pool) = &agent.local_addresses else {
        return;
    };
    let fullnat: Vec<&Draft> = drafts.iter().filter(|l| l.is_fullnat()).collect();
    if pool.is_empty() && !fullnat.is_empty() {
        errs.push(
            "agent.local_addresses",
            format!(
                "required for fullnat {} (the FULLNAT source pool, e.g. [\"100.64.0.10\"])",
                paths(fullnat.iter().copied())
            ),
        );
    } else {
        missing_families(pool, &fullnat, "agent.local_addresses", "fullnat ", errs);
    }
    for (i, addr) in pool.iter().enumerate() {
        if let Some(l) = drafts.iter().find(|l| l.vip == Some(*addr)) {
            errs.push(
                format!("agent.local_addresses[{i}]"),
                format!("{addr} is also the vip of {}", l.path),
            );
        }
        if let Some(l) = backend_at(drafts, addr) {
            errs.push(
                format!("agent.local_addresses[{i}]"),
                format!("{addr} is also a backend of {}", l.path),
            );
        }
    }
}

/// Health checks need a source address of each backend family; it may not
/// be a VIP or a FULLNAT pool address (the dataplane would take the replies),
/// nor loopback unless every backend it checks is on loopback too.
fn probe_source(agent: &AgentDraft, drafts: &[Draft], errs: &mut Errors) {
    let Some(sources) = &agent.probe_source else {
        return;
    };
    let checked: Vec<&Draft> = drafts.iter().filter(|l| l.checks_health).collect();
    if !agent.probe_source_given {
        if !checked.is_empty() {
            errs.push(
                "agent.probe_source",
                "is required when health checks are enabled (the source address of health \
                 checks, e.g. \"100.64.0.1\")",
            );
        }
        return;
    }
    missing_families(
        sources,
        &checked,
        "agent.probe_source",
        "the health checks of ",
        errs,
    );
    // `sources` is only `Some` when every address was valid, so it lines
    // up with the paths of the addresses as given.
    for (addr, path) in sources.iter().zip(&agent.probe_source_paths) {
        if addr.is_loopback() {
            // The kernel refuses a connect from a loopback source to an
            // address elsewhere (EINVAL): every check would fail.
            let beyond = checked.iter().find_map(|l| {
                l.backend_addresses
                    .iter()
                    .find(|b| b.is_ipv4() == addr.is_ipv4() && !b.is_loopback())
                    .map(|b| (b, l))
            });
            if let Some((b, l)) = beyond {
                errs.push(
                    path,
                    format!(
                        "{addr} is a loopback address: health checks from it cannot reach {b} \
                         ({}); use an address such as 100.64.0.1",
                        l.path
                    ),
                );
            }
        }
        if let Some(l) = backend_at(drafts, addr) {
            errs.push(path, format!("{addr} is also a backend of {}", l.path));
        }
        if let Some(l) = drafts.iter().find(|l| l.vip == Some(*addr)) {
            errs.push(path, format!("{addr} is also the vip of {}", l.path));
        }
        if agent
            .local_addresses
            .as_ref()
            .is_some_and(|p| p.contains(addr))
        {
            errs.push(path, format!("{addr} is also in agent.local_addresses"));
        }
    }
}

/// A lookup table must have at least a slot per backend: `maglev` and
/// `sh` share the Maglev table (with fewer slots, backends get none), and
/// a `wrr` sequence has an entry per backend at least, in a map half of
/// `maglev_table_size` slots it must not run out of. (`wlc` has its own,
/// much lower limit.)
fn maglev_size(agent: &AgentDraft, drafts: &[Draft], errs: &mut Errors) {
    let Some(size) = agent.maglev_table_size else {
        return;
    };
    for l in drafts {
        let n = l.backend_addresses.len();
        let name = match l.scheduler {
            Some(Scheduler::Maglev) => "maglev",
            Some(Scheduler::Sh) => "sh",
            Some(Scheduler::Wrr) => "wrr",
            Some(Scheduler::Wlc) | None => continue,
        };
        // (An http/https listener's "hash" has no table.)
        if l.is_l4() && n > size as usize {
            errs.push(
                format!("{}.scheduler", l.path),
                format!("{name} needs agent.maglev_table_size ({size}) to be at least the number of backends ({n})"),
            );
        }
    }
}

/// The metrics endpoint is bound in the same process as the proxy's
/// sockets: one on an http/https listener's address and port (or on a
/// wildcard covering it) makes the later bind fail with "address in use"
/// when the agent starts. tcp/udp listeners bind nothing.
fn metrics_listen(agent: &AgentDraft, drafts: &[Draft], errs: &mut Errors) {
    let Some(metrics) = agent.metrics_listen else {
        return;
    };
    // `[::]` is dual-stack unless net.ipv6.bindv6only is set (it is not
    // by default), so it covers IPv4 addresses too.
    let covers = |vip: IpAddr| {
        let m = metrics.ip();
        m == vip || (m.is_unspecified() && (m.is_ipv6() || vip.is_ipv4()))
    };
    let taken = drafts.iter().find_map(|l| {
        let own = SocketAddr::new(l.vip?, l.port?);
        let l7 = l.protocol.is_some_and(|p| p.is_l7());
        (l7 && own.port() == metrics.port() && covers(own.ip())).then_some((l, own))
    });
    if let Some((l, own)) = taken {
        errs.push(
            "agent.metrics_listen",
            format!(
                "{metrics} takes the address and port of {} ({own}), where the proxy \
                 listens: use another port",
                l.path
            ),
        );
    }
}
