//! The `health_check` table of a listener (SPEC §4).

use super::defaults as d;
use super::error::Errors;
use super::model::{
    CheckProtocol, HealthCheck, HttpMethod, HttpProbe, Probe, Protocol, StatusClass, UdpProbe,
};
use super::raw::RawHealthCheck;
use super::values::{duration_or, key, keyword, keyword_or, port, u32_or};

/// Validates the health check of a listener whose protocol is `listener`
/// (`None` when that protocol is itself invalid). Returns `None` when an
/// error was reported, `Some(None)` when checks are turned off.
pub(crate) fn check(
    raw: Option<&RawHealthCheck>,
    listener: Option<Protocol>,
    path: &str,
    errs: &mut Errors,
) -> Option<Option<HealthCheck>> {
    let default = RawHealthCheck::default();
    let r = raw.unwrap_or(&default);
    let before = errs.len();

    let enabled = r.enabled.unwrap_or(true);
    if let (false, Some(p)) = (enabled, listener) {
        if p.is_l4() {
            errs.push(
                key(path, "enabled"),
                format!(
                    "health checks cannot be turned off for {p} listeners (only for http/https)"
                ),
            );
        }
    }

    let protocol = match &r.protocol {
        Some(t) => keyword(t, CheckProtocol::ALL, &key(path, "protocol"), errs),
        None => listener.map(d::check_protocol),
    };
    if let (Some(CheckProtocol::Udp), Some(p)) = (protocol, listener) {
        if p != Protocol::Udp {
            errs.push(
                key(path, "protocol"),
                format!("a udp check needs a udp listener (this is a {p} listener)"),
            );
        }
    }

    let interval = duration_or(
        r.interval.as_ref(),
        d::CHECK_INTERVAL,
        d::CHECK_INTERVAL_MIN,
        d::CHECK_INTERVAL_MAX,
        &key(path, "interval"),
        errs,
    );
    let timeout = duration_or(
        r.timeout.as_ref(),
        d::CHECK_TIMEOUT,
        d::CHECK_TIMEOUT_MIN,
        d::CHECK_TIMEOUT_MAX,
        &key(path, "timeout"),
        errs,
    );
    let healthy = u32_or(
        r.healthy_threshold,
        d::CHECK_THRESHOLD,
        d::CHECK_THRESHOLD_MIN,
        d::CHECK_THRESHOLD_MAX,
        &key(path, "healthy_threshold"),
        errs,
    );
    let unhealthy = u32_or(
        r.unhealthy_threshold,
        d::CHECK_THRESHOLD,
        d::CHECK_THRESHOLD_MIN,
        d::CHECK_THRESHOLD_MAX,
        &key(path, "unhealthy_threshold"),
        errs,
    );

    if let Some(p) = protocol {
        reject_foreign_keys(r, p, path, errs);
    }
    // Any check may go to another port than the service's (keepalived's
    // `connect_port`, HAProxy's `port`): a health endpoint of its own.
    let check_port = match r.port {
        None => Some(None),
        Some(p) => port(p, &key(path, "port"), errs).map(Some),
    };
    let probe = match protocol {
        Some(CheckProtocol::Tcp) => Some(Probe::Tcp),
        Some(CheckProtocol::Http) => http_probe(r, path, errs).map(Probe::Http),
        Some(CheckProtocol::Udp) => udp_probe(r, path, errs).map(Probe::Udp),
        None => None,
    };

    if errs.len() != before {
        return None;
    }
    if !enabled {
        return Some(None);
    }
    Some(Some(HealthCheck {
        interval: interval?,
        timeout: timeout?,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
        port: check_port?,
        probe: probe?,
    }))
}

/// Keys of one check protocol given for another.
fn reject_foreign_keys(r: &RawHealthCheck, protocol: CheckProtocol, path: &str, errs: &mut Errors) {
    let http_keys = [
        ("method", r.method.is_some()),
        ("path", r.path.is_some()),
        ("host", r.host.is_some()),
        ("codes", r.codes.is_some()),
    ];
    let udp_keys = [
        ("payload", r.payload.is_some()),
        ("expect", r.expect.is_some()),
        ("payload_hex", r.payload_hex.is_some()),
        ("expect_hex", r.expect_hex.is_some()),
    ];
    let groups: [(CheckProtocol, &[(&str, bool)]); 2] = [
        (CheckProtocol::Http, &http_keys),
        (CheckProtocol::Udp, &udp_keys),
    ];
    for (owner, keys) in groups {
        if owner == protocol {
            continue;
        }
        for (name, given) in keys {
            if *given {
                errs.push(
                    key(path, name),
                    format!("only for {owner} checks (this check's protocol is \"{protocol}\")"),
                );
            }
        }
    }
}

fn http_probe(r: &RawHealthCheck, path: &str, errs: &mut Errors) -> Option<HttpProbe> {
    let before = errs.len();
    let method = keyword_or(
        r.method.as_ref(),
        HttpMethod::ALL,
        d::HTTP_METHOD,
        &key(path, "method"),
        errs,
    );
    let url_path = match &r.path {
        None => Some(d::HTTP_PATH.to_owned()),
        Some(p) => check_url_path(p, &key(path, "path"), errs),
    };
    let host = match &r.host {
        None => None,
        Some(h) => check_host(h, &key(path, "host"), errs),
    };
    let codes = match &r.codes {
        None => Some(d::HTTP_CODES.to_vec()),
        Some(c) => check_codes(c, &key(path, "codes"), errs),
    };
    if errs.len() != before {
        return None;
    }
    Some(HttpProbe {
        method: method?,
        path: url_path?,
        host,
        codes: codes?,
    })
}

fn check_url_path(p: &str, path: &str, errs: &mut Errors) -> Option<String> {
    const EXTRA: &str = "-_/.%?#&=";
    let chars_ok = p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || EXTRA.contains(c));
    if p.is_empty() || p.len() > d::HTTP_PATH_MAX_LEN || !chars_ok || !p.starts_with('/') {
        errs.push(
            path,
            format!(
                "must start with '/' and be 1..={} characters of letters, digits and \
                 \"{EXTRA}\" (got \"{p}\")",
                d::HTTP_PATH_MAX_LEN
            ),
        );
        return None;
    }
    // The path is sent as written: a `%` that does not start a
    // percent-encoded byte makes an invalid request target (RFC 3986
    // §2.1), which servers answer with 400 Bad Request.
    let bytes = p.as_bytes();
    let lone_percent = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if lone_percent {
        errs.push(
            path,
            format!(
                "'%' must be followed by two hex digits (write %25 for a literal '%'; \
                 got \"{p}\")"
            ),
        );
        return None;
    }
    Some(p.to_owned())
}

fn check_host(h: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let chars_ok = h
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if h.is_empty() || h.len() > d::HTTP_HOST_MAX_LEN || !chars_ok {
        errs.push(
            path,
            format!(
                "must be 1..={} characters of letters, digits, '-' and '.' (got \"{h}\")",
                d::HTTP_HOST_MAX_LEN
            ),
        );
        return None;
    }
    Some(h.to_owned())
}

fn check_codes(codes: &[String], path: &str, errs: &mut Errors) -> Option<Vec<StatusClass>> {
    if codes.is_empty() {
        errs.push(
            path,
            "must list at least one of \"2xx\", \"3xx\", \"4xx\", \"5xx\"",
        );
        return None;
    }
    let before = errs.len();
    let mut seen: Vec<(usize, StatusClass)> = Vec::with_capacity(codes.len());
    for (i, c) in codes.iter().enumerate() {
        let item = format!("{path}[{i}]");
        if let Some(class) = keyword(c, StatusClass::ALL, &item, errs) {
            if let Some((j, _)) = seen.iter().find(|(_, x)| *x == class) {
                errs.push(item, format!("\"{c}\" is listed twice (also at [{j}])"));
            } else {
                seen.push((i, class));
            }
        }
    }
    (errs.len() == before).then(|| seen.into_iter().map(|(_, c)| c).collect())
}

fn udp_probe(r: &RawHealthCheck, path: &str, errs: &mut Errors) -> Option<UdpProbe> {
    let payload = match udp_bytes(
        r.payload.as_deref(),
        r.payload_hex.as_deref(),
        path,
        "payload",
        errs,
    ) {
        Bytes::Unset => Some(d::UDP_PAYLOAD.as_bytes().to_vec()),
        Bytes::Set(b) => Some(b),
        Bytes::Invalid => None,
    };
    let expect = match udp_bytes(
        r.expect.as_deref(),
        r.expect_hex.as_deref(),
        path,
        "expect",
        errs,
    ) {
        Bytes::Unset => Some(None),
        Bytes::Set(b) => Some(Some(b)),
        Bytes::Invalid => None,
    };
    Some(UdpProbe {
        payload: payload?,
        expect: expect?,
    })
}

enum Bytes {
    Unset,
    Set(Vec<u8>),
    Invalid,
}

/// The bytes of `name` (a TOML string, sent as its UTF-8) or of
/// `name_hex` (hex digits, for bytes a string cannot give: keepalived's
/// UDP_CHECK writes its payload so); one of the two at most.
fn udp_bytes(
    text: Option<&str>,
    hex: Option<&str>,
    path: &str,
    name: &str,
    errs: &mut Errors,
) -> Bytes {
    let hex_name = format!("{name}_hex");
    let (bytes, at) = match (text, hex) {
        (None, None) => return Bytes::Unset,
        (Some(_), Some(_)) => {
            errs.push(
                key(path, &hex_name),
                format!("give `{name}` or `{hex_name}`, not both"),
            );
            return Bytes::Invalid;
        }
        (Some(t), None) => (t.as_bytes().to_vec(), key(path, name)),
        (None, Some(h)) => {
            let at = key(path, &hex_name);
            match decode_hex(h) {
                Ok(b) => (b, at),
                Err(e) => {
                    errs.push(&at, e);
                    return Bytes::Invalid;
                }
            }
        }
    };
    match check_bytes(bytes, &at, errs) {
        Some(b) => Bytes::Set(b),
        None => Bytes::Invalid,
    }
}

/// Hex digits in pairs, upper or lower case; spaces between bytes allowed
/// for readability (`"1b 00 00 00"`).
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<(usize, char)> = s.char_indices().filter(|(_, c)| *c != ' ').collect();
    if let Some((i, c)) = digits.iter().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!("{c:?} at offset {i} is not a hex digit"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "an odd number of hex digits ({}): each byte takes two",
            digits.len()
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| {
            // Invariant: both are ASCII hex digits (checked above).
            let nibble = |c: char| c.to_digit(16).unwrap_or(0) as u8;
            nibble(pair[0].1) << 4 | nibble(pair[1].1)
        })
        .collect())
}

fn check_bytes(b: Vec<u8>, path: &str, errs: &mut Errors) -> Option<Vec<u8>> {
    if b.is_empty() || b.len() > d::UDP_PAYLOAD_MAX_LEN {
        errs.push(
            path,
            format!(
                "must be 1..={} bytes (got {})",
                d::UDP_PAYLOAD_MAX_LEN,
                b.len()
            ),
        );
        return None;
    }
    Some(b)
}
