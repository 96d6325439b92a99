//! The keys only `http`/`https` listeners take (SPEC §5): scheduler and hash
//! key, cookie persistence, timeouts and limits, forwarding rules, backend
//! groups, certificates.
//!
//! Certificate and key files are read here (and again by the proxy when it
//! starts or reloads), so that `slb validate` reports an unreadable file, a
//! file without PEM data or a key that does not match its certificate with
//! the key path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::defaults as d;
use super::error::Errors;
use super::model::{
    Backend, Certificate, CookieMode, CookiePersistence, Group, HashKey, L7Scheduler, L7Settings,
    Protocol, Rule, Scheduler,
};
use super::raw::{RawBackend, RawListener, RawPersistence};
use super::values::{duration_or, key, keyword, keyword_or, required, u32_or};
use crate::l7::router::normalise;

/// What validating the L7 keys of a listener found.
#[derive(Debug)]
pub(crate) struct L7Draft {
    /// `None` when an error was reported.
    pub settings: Option<L7Settings>,
    /// The listener's `scheduler` in the shared model (`hash` as `Maglev`).
    pub scheduler: Option<Scheduler>,
    /// Addresses of the group backends that have a valid one.
    pub group_addresses: Vec<IpAddr>,
    /// An `http` listener with `redirect_https = true`: it needs no backend.
    pub redirect_only: bool,
}

/// The listener's own VIP and port, for the "backend is the listener
/// itself" check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Own {
    pub vip: Option<IpAddr>,
    pub port: Option<u16>,
}

/// Reports every L7-only key given on a `tcp`/`udp` listener.
pub(crate) fn reject_on_l4(raw: &RawListener, protocol: Protocol, path: &str, errs: &mut Errors) {
    let given = [
        ("hash_key", raw.hash_key.is_some()),
        ("redirect_https", raw.redirect_https.is_some()),
        ("gzip", raw.gzip.is_some()),
        (
            "backend_connect_timeout",
            raw.backend_connect_timeout.is_some(),
        ),
        (
            "backend_response_timeout",
            raw.backend_response_timeout.is_some(),
        ),
        ("client_idle_timeout", raw.client_idle_timeout.is_some()),
        (
            "request_header_timeout",
            raw.request_header_timeout.is_some(),
        ),
        (
            "max_requests_per_connection",
            raw.max_requests_per_connection.is_some(),
        ),
        ("max_header_size", raw.max_header_size.is_some()),
        ("client_ca", raw.client_ca.is_some()),
        ("certificate", !raw.certificate.is_empty()),
        ("rule", !raw.rule.is_empty()),
        ("group", !raw.group.is_empty()),
    ];
    for (name, is_given) in given {
        if is_given {
            errs.push(
                key(path, name),
                format!("only for http/https listeners (this is a {protocol} listener)"),
            );
        }
    }
}

/// Validates the L7 keys of an `http`/`https` listener at `path`.
pub(crate) fn check(
    raw: &RawListener,
    protocol: Protocol,
    own: Own,
    path: &str,
    base: Option<&Path>,
    errs: &mut Errors,
) -> L7Draft {
    let before = errs.len();
    let k = |name: &str| key(path, name);
    let https = protocol == Protocol::Https;

    let scheduler = check_scheduler(raw.scheduler.as_ref(), &k("scheduler"), errs);
    let hash_key = check_hash_key(raw, scheduler, path, errs);
    let persistence = raw
        .persistence
        .as_ref()
        .map(|p| check_persistence(p, &k("persistence"), errs));

    let redirect_https = match raw.redirect_https {
        Some(true) if https => {
            errs.push(
                k("redirect_https"),
                "only for http listeners (this listener already is https)",
            );
            false
        }
        value => value.unwrap_or(false),
    };
    let timeout = |value, default, max, name: &str, errs: &mut Errors| {
        duration_or(value, default, d::L7_TIMEOUT_MIN, max, &k(name), errs)
    };
    let connect = timeout(
        raw.backend_connect_timeout.as_ref(),
        d::BACKEND_CONNECT_TIMEOUT,
        d::BACKEND_CONNECT_TIMEOUT_MAX,
        "backend_connect_timeout",
        errs,
    );
    let response = timeout(
        raw.backend_response_timeout.as_ref(),
        d::BACKEND_RESPONSE_TIMEOUT,
        d::BACKEND_RESPONSE_TIMEOUT_MAX,
        "backend_response_timeout",
        errs,
    );
    let client_idle = timeout(
        raw.client_idle_timeout.as_ref(),
        d::CLIENT_IDLE_TIMEOUT,
        d::CLIENT_IDLE_TIMEOUT_MAX,
        "client_idle_timeout",
        errs,
    );
    let header = timeout(
        raw.request_header_timeout.as_ref(),
        d::REQUEST_HEADER_TIMEOUT,
        d::REQUEST_HEADER_TIMEOUT_MAX,
        "request_header_timeout",
        errs,
    );
    let max_requests = u32_or(
        raw.max_requests_per_connection,
        d::MAX_REQUESTS_PER_CONNECTION,
        1,
        d::MAX_REQUESTS_PER_CONNECTION_MAX,
        &k("max_requests_per_connection"),
        errs,
    );
    let max_header = u32_or(
        raw.max_header_size,
        d::MAX_HEADER_SIZE,
        d::MAX_HEADER_SIZE_MIN,
        d::MAX_HEADER_SIZE_MAX,
        &k("max_header_size"),
        errs,
    );

    let certificates = check_certificates(raw, https, path, base, errs);
    let client_ca = match (&raw.client_ca, https) {
        (None, _) => None,
        (Some(_), false) => {
            errs.push(
                k("client_ca"),
                "only for https listeners (client certificates are part of TLS)",
            );
            None
        }
        (Some(p), true) => {
            let file = resolve(p, base);
            if let Err(e) = crate::l7::pem::load_roots(&file) {
                errs.push(k("client_ca"), e.to_string());
            }
            Some(file)
        }
    };

    let mut group_addresses = Vec::new();
    let groups = check_groups(raw, own, path, &mut group_addresses, errs);
    let rules = check_rules(raw, &groups, path, errs);

    let scheduler_model = scheduler.map(|s| match s {
        L7Scheduler::Wrr => Scheduler::Wrr,
        L7Scheduler::Wlc => Scheduler::Wlc,
        L7Scheduler::Hash => Scheduler::Maglev,
    });
    let settings = if errs.len() == before {
        (|| {
            Some(L7Settings {
                scheduler: scheduler?,
                hash_key,
                persistence: persistence.flatten(),
                redirect_https,
                gzip: raw.gzip.unwrap_or(false),
                backend_connect_timeout: connect?,
                backend_response_timeout: response?,
                client_idle_timeout: client_idle?,
                request_header_timeout: header?,
                max_requests_per_connection: max_requests?,
                max_header_size: max_header?,
                certificates,
                client_ca,
                rules,
                groups,
            })
        })()
    } else {
        None
    };
    L7Draft {
        settings,
        scheduler: scheduler_model,
        group_addresses,
        redirect_only: redirect_https && !https,
    }
}

fn check_scheduler(text: Option<&String>, path: &str, errs: &mut Errors) -> Option<L7Scheduler> {
    if let Some(t) = text {
        if t == "maglev" || t == "sh" {
            errs.push(
                path,
                format!(
                    "\"{t}\" is a tcp/udp scheduler; http/https listeners use \"wrr\", \"wlc\" \
                     or \"hash\" (consistent hashing on hash_key)"
                ),
            );
            return None;
        }
    }
    keyword_or(text, L7Scheduler::ALL, d::L7_SCHEDULER, path, errs)
}

fn check_hash_key(
    raw: &RawListener,
    scheduler: Option<L7Scheduler>,
    path: &str,
    errs: &mut Errors,
) -> Option<HashKey> {
    let p = key(path, "hash_key");
    let Some(h) = &raw.hash_key else {
        if scheduler == Some(L7Scheduler::Hash) {
            errs.push(
                &p,
                "is required with scheduler = \"hash\": { header = \"X-User\" } or { cookie = \"uid\" }",
            );
        }
        return None;
    };
    if let Some(s) = scheduler.filter(|s| *s != L7Scheduler::Hash) {
        errs.push(
            &p,
            format!("only with scheduler = \"hash\" (this listener's scheduler is \"{s}\")"),
        );
        return None;
    }
    match (&h.header, &h.cookie) {
        (Some(name), None) => token(name, &key(&p, "header"), "a header name", errs)
            .map(|n| HashKey::Header(n.to_ascii_lowercase())),
        (None, Some(name)) => token(name, &key(&p, "cookie"), "a cookie name", errs)
            .map(|n| HashKey::Cookie(n.to_owned())),
        _ => {
            errs.push(&p, "must have exactly one of header or cookie");
            None
        }
    }
}

/// An HTTP token (RFC 9110 §5.6.2): header and cookie names.
fn token<'a>(text: &'a str, path: &str, what: &str, errs: &mut Errors) -> Option<&'a str> {
    const EXTRA: &str = "!#$%&'*+-.^_`|~";
    let ok = !text.is_empty()
        && text.len() <= 256
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || EXTRA.contains(c));
    if ok {
        Some(text)
    } else {
        errs.push(
            path,
            format!("must be {what}: 1..=256 letters, digits and \"{EXTRA}\" (got \"{text}\")"),
        );
        None
    }
}

/// `None` when an error was reported. Every key is checked whatever the
/// others hold (a bad mode does not hide a bad timeout), so that `slb
/// validate` lists every error at once.
fn check_persistence(
    raw: &RawPersistence,
    path: &str,
    errs: &mut Errors,
) -> Option<CookiePersistence> {
    let before = errs.len();
    let mode_path = key(path, "mode");
    let mode = required(raw.mode.as_ref(), &mode_path, errs).and_then(|m| {
        if m == "source_ip" {
            errs.push(
                &mode_path,
                "\"source_ip\" persistence is only for tcp/udp listeners (this is an http/https \
                 listener: use \"insert_cookie\" or \"rewrite_cookie\")",
            );
            return None;
        }
        keyword(m, CookieMode::ALL, &mode_path, errs)
    });
    let cookie_path = key(path, "cookie");
    let given = raw
        .cookie
        .as_ref()
        .map(|c| token(c, &cookie_path, "a cookie name", errs).map(str::to_owned));
    let cookie = match (mode, given) {
        (_, Some(c)) => c,
        (Some(CookieMode::InsertCookie), None) => Some(d::INSERT_COOKIE.to_owned()),
        (Some(CookieMode::RewriteCookie), None) => {
            errs.push(
                &cookie_path,
                "is required with mode = \"rewrite_cookie\" (the application's cookie, e.g. \"SESSIONID\")",
            );
            None
        }
        (None, None) => None,
    };
    let timeout = match (mode, &raw.timeout) {
        (Some(CookieMode::RewriteCookie), Some(_)) => {
            errs.push(
                key(path, "timeout"),
                "only with mode = \"insert_cookie\" (the application sets its cookie's lifetime)",
            );
            None
        }
        (Some(CookieMode::RewriteCookie), None) => Some(None),
        // insert_cookie, or a mode that is wrong: the value is checked anyway.
        (_, value) => duration_or(
            value.as_ref(),
            d::PERSISTENCE_TIMEOUT,
            d::PERSISTENCE_TIMEOUT_MIN,
            d::PERSISTENCE_TIMEOUT_MAX,
            &key(path, "timeout"),
            errs,
        )
        .map(Some),
    };
    if errs.len() != before {
        return None;
    }
    Some(CookiePersistence {
        mode: mode?,
        cookie: cookie?,
        timeout: timeout?,
    })
}

/// A file name from the configuration: relative names are taken from the
/// configuration file's directory.
fn resolve(text: &str, base: Option<&Path>) -> PathBuf {
    let p = PathBuf::from(text);
    match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    }
}

fn check_certificates(
    raw: &RawListener,
    https: bool,
    path: &str,
    base: Option<&Path>,
    errs: &mut Errors,
) -> Vec<Certificate> {
    if !https {
        if !raw.certificate.is_empty() {
            errs.push(
                key(path, "certificate"),
                "only for https listeners (this is an http listener)",
            );
        }
        return Vec::new();
    }
    // None at all is reported by `validate` for a file (`load`), and by
    // `Config::require_certificates` (`parse` accepts none).
    let mut out = Vec::new();
    for (i, c) in raw.certificate.iter().enumerate() {
        let cpath = format!("{path}.certificate[{i}]");
        let cert = required(c.cert.as_ref(), &key(&cpath, "cert"), errs).map(|t| resolve(t, base));
        let pkey = required(c.key.as_ref(), &key(&cpath, "key"), errs).map(|t| resolve(t, base));
        let (Some(cert), Some(pkey)) = (cert, pkey) else {
            continue;
        };
        let chain = crate::l7::pem::load_certs(&cert)
            .map_err(|e| errs.push(key(&cpath, "cert"), e.to_string()))
            .ok();
        let private = crate::l7::pem::load_key(&pkey)
            .map_err(|e| errs.push(key(&cpath, "key"), e.to_string()))
            .ok();
        if let (Some(chain), Some(private)) = (chain, private) {
            if let Err(e) = crate::l7::pem::certified_key(chain, private, &cert, &pkey) {
                errs.push(cpath.clone(), e.to_string());
            }
        }
        out.push(Certificate { cert, key: pkey });
    }
    out
}

fn check_groups(
    raw: &RawListener,
    own: Own,
    path: &str,
    addresses: &mut Vec<IpAddr>,
    errs: &mut Errors,
) -> Vec<Group> {
    if raw.group.len() > d::MAX_GROUPS {
        errs.push(
            key(path, "group"),
            format!("at most {} groups (got {})", d::MAX_GROUPS, raw.group.len()),
        );
    }
    let mut groups = Vec::new();
    let mut names: Vec<(usize, String)> = Vec::new();
    for (i, g) in raw.group.iter().enumerate() {
        let gpath = format!("{path}.group[{i}]");
        let name = required(g.name.as_ref(), &key(&gpath, "name"), errs).and_then(|n| {
            let chars_ok = n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if n.is_empty() || n.len() > 64 || !chars_ok {
                errs.push(
                    key(&gpath, "name"),
                    format!("must be 1..=64 letters, digits and \"-_.\" (got \"{n}\")"),
                );
                None
            } else if n == d::DEFAULT_GROUP {
                errs.push(
                    key(&gpath, "name"),
                    "\"default\" is the listener's own [[listener.backend]] list",
                );
                None
            } else if let Some((j, _)) = names.iter().find(|(_, o)| o == n) {
                errs.push(
                    key(&gpath, "name"),
                    format!("\"{n}\" is already the name of group[{j}]"),
                );
                None
            } else {
                names.push((i, n.clone()));
                Some(n.clone())
            }
        });
        let backends = check_group_backends(&g.backend, own, &gpath, addresses, errs);
        if let (Some(name), Some(backends)) = (name, backends) {
            groups.push(Group { name, backends });
        }
    }
    groups
}

/// The backends of a group: the checks of the listener's own backends that
/// apply to an http/https listener.
fn check_group_backends(
    raw: &[RawBackend],
    own: Own,
    gpath: &str,
    addresses: &mut Vec<IpAddr>,
    errs: &mut Errors,
) -> Option<Vec<Backend>> {
    if raw.is_empty() {
        errs.push(
            key(gpath, "backend"),
            "at least one [[listener.group.backend]] is required",
        );
        return None;
    }
    let before = errs.len();
    let mut out: Vec<Backend> = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let bpath = format!("{gpath}.backend[{i}]");
        let k = |name: &str| key(&bpath, name);
        let (address, bport, weight) = super::listener::backend_fields(b, &bpath, errs);
        if let Some(addr) = address {
            addresses.push(addr);
            if Some(addr) == own.vip && bport.is_some() && bport == own.port {
                errs.push(
                    k("address"),
                    format!("is the listener's own vip and port ({addr})"),
                );
            }
        }
        if let (Some(address), Some(port), Some(weight)) = (address, bport, weight) {
            let b = Backend {
                address,
                port,
                weight,
                backup: raw[i].backup.unwrap_or(false),
            };
            if let Some(j) = out.iter().position(|o| o.socket_addr() == b.socket_addr()) {
                errs.push(
                    bpath.clone(),
                    format!("duplicate of backend[{j}] ({})", b.socket_addr()),
                );
            }
            out.push(b);
        }
    }
    (errs.len() == before).then_some(out)
}

fn check_rules(raw: &RawListener, groups: &[Group], path: &str, errs: &mut Errors) -> Vec<Rule> {
    if raw.rule.len() > d::MAX_RULES {
        errs.push(
            key(path, "rule"),
            format!("at most {} rules (got {})", d::MAX_RULES, raw.rule.len()),
        );
    }
    let mut rules = Vec::new();
    // (index, (host, normalised path)) of the valid rules so far.
    type Matches = (Option<String>, Option<Vec<u8>>);
    let mut seen: Vec<(usize, Matches)> = Vec::new();
    for (i, r) in raw.rule.iter().enumerate() {
        let rpath = format!("{path}.rule[{i}]");
        let host = r
            .host
            .as_ref()
            .map(|h| check_host(h, &key(&rpath, "host"), errs));
        let url_path = r
            .path
            .as_ref()
            .map(|p| check_path(p, &key(&rpath, "path"), errs));
        if r.host.is_none() && r.path.is_none() {
            errs.push(
                rpath.clone(),
                "needs host, path or both (requests no rule matches go to the listener's own backends)",
            );
        }
        let group = required(r.group.as_ref(), &key(&rpath, "group"), errs).and_then(|g| {
            if g == d::DEFAULT_GROUP || groups.iter().any(|o| &o.name == g) {
                Some(g.clone())
            } else if raw.group.iter().any(|o| o.name.as_ref() == Some(g)) {
                // The group exists but has an error of its own.
                None
            } else {
                let mut known: Vec<String> = vec![format!("\"{}\"", d::DEFAULT_GROUP)];
                known.extend(groups.iter().map(|o| format!("\"{}\"", o.name)));
                errs.push(
                    key(&rpath, "group"),
                    format!("no group \"{g}\" (groups: {})", known.join(", ")),
                );
                None
            }
        });
        // `Some(None)`: given but wrong (reported); `None`: not given.
        let (Some(host), Some(url_path)) = (
            host.map_or(Some(None), |h| h.map(Some)),
            url_path.map_or(Some(None), |p| p.map(Some)),
        ) else {
            continue;
        };
        // The router breaks a tie for the earlier rule, reading hosts
        // lower-case (as stored) and paths normalised.
        let matches = (
            host.clone(),
            url_path.as_deref().map(|p| normalise(p).into_owned()),
        );
        if let Some((j, _)) = seen.iter().find(|(_, m)| *m == matches) {
            errs.push(
                rpath.clone(),
                format!("has the host and path of rule[{j}], which wins: it would never be used"),
            );
        } else {
            seen.push((i, matches));
        }
        if let Some(group) = group {
            rules.push(Rule {
                host,
                path: url_path,
                group,
            });
        }
    }
    rules
}

/// `www.example.com` or `*.example.com`, stored lower-case; or an IPv6
/// address, with or without brackets, stored as a request names it
/// (`[2001:db8::10]`, in its canonical form: the router puts the request's
/// in that form too). An IPv4 address passes as a name.
fn check_host(h: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let literal = h
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(v6) = literal.parse::<std::net::Ipv6Addr>() {
        return Some(format!("[{v6}]"));
    }
    let name = h.strip_prefix("*.").unwrap_or(h);
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let labels_ok = name.split('.').all(|l| !l.is_empty());
    if name.is_empty() || h.len() > d::HTTP_HOST_MAX_LEN || !chars_ok || !labels_ok {
        errs.push(
            path,
            format!(
                "must be a host name such as \"www.example.com\" or \"*.example.com\" \
                 (letters, digits, '-' and '.'; no port), or an IP address (got \"{h}\")"
            ),
        );
        return None;
    }
    Some(h.to_ascii_lowercase())
}

/// A path prefix: starts with `/`, visible ASCII only, no `?` or `#`.
fn check_path(p: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let chars_ok = p.chars().all(|c| c.is_ascii_graphic());
    if !p.starts_with('/') || p.len() > d::RULE_PATH_MAX_LEN || !chars_ok {
        errs.push(
            path,
            format!(
                "must be a path prefix starting with '/', 1..={} visible ASCII characters (got \"{p}\")",
                d::RULE_PATH_MAX_LEN
            ),
        );
        return None;
    }
    // The router is given the request's path without its query, and a
    // fragment is never sent: such a prefix matches no request as meant
    // (only one with an encoded `%3F` or `%23`).
    if p.contains(['?', '#']) {
        errs.push(
            path,
            format!(
                "rules match the path only, without the query ('?') or fragment ('#') \
                 (got \"{p}\")"
            ),
        );
        return None;
    }
    Some(p.to_owned())
}
