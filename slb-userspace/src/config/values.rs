//! Checks of single values; each pushes a message for its key on failure and
//! returns `None`.

use std::net::IpAddr;
use std::time::Duration;

use super::duration::{self, RawDuration};
use super::error::Errors;

/// `parent.name`, or `name` at the top level.
pub(crate) fn key(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// A key the operator must give.
pub(crate) fn required<'a, T>(
    value: Option<&'a T>,
    path: &str,
    errs: &mut Errors,
) -> Option<&'a T> {
    if value.is_none() {
        errs.push(path, "is required");
    }
    value
}

/// One of a fixed set of keywords.
pub(crate) fn keyword<T: Copy>(
    text: &str,
    all: &[(&str, T)],
    path: &str,
    errs: &mut Errors,
) -> Option<T> {
    let found = all.iter().find(|(t, _)| *t == text).map(|(_, v)| *v);
    if found.is_none() {
        let names: Vec<String> = all.iter().map(|(t, _)| format!("\"{t}\"")).collect();
        let hint = suggest(text, all.iter().map(|(t, _)| *t))
            .map(|s| format!("; did you mean \"{s}\"?"))
            .unwrap_or_default();
        errs.push(
            path,
            format!("must be one of {} (got \"{text}\"){hint}", names.join(", ")),
        );
    }
    found
}

/// The candidate `word` is most likely a misspelling of: the same but for
/// case, or within two edits (one for words of up to four letters), when
/// exactly one candidate is that close.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str> + Clone,
) -> Option<&'a str> {
    if let Some(c) = candidates.clone().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(c);
    }
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    let mut best: Option<(usize, &str)> = None;
    let mut tied = false;
    for c in candidates {
        let d = edit_distance(word, c);
        match best {
            Some((b, _)) if d > b => {}
            Some((b, _)) if d == b => tied = true,
            _ => {
                best = Some((d, c));
                tied = false;
            }
        }
    }
    match best {
        Some((d, c)) if d <= limit && !tied => Some(c),
        _ => None,
    }
}

/// Levenshtein distance in characters, a transposition counting as one
/// edit (optimal string alignment): `helht` is one edit from `helth`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, row);
    }
    prev[b.len()]
}

/// An optional keyword with a default.
pub(crate) fn keyword_or<T: Copy>(
    text: Option<&String>,
    all: &[(&str, T)],
    default: T,
    path: &str,
    errs: &mut Errors,
) -> Option<T> {
    match text {
        Some(t) => keyword(t, all, path, errs),
        None => Some(default),
    }
}

/// An integer in `min..=max`.
pub(crate) fn int_in(value: i64, min: i64, max: i64, path: &str, errs: &mut Errors) -> Option<i64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        errs.push(path, format!("must be {min}..={max} (got {value})"));
        None
    }
}

/// An optional `u32` in `min..=max` with a default.
pub(crate) fn u32_or(
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
    path: &str,
    errs: &mut Errors,
) -> Option<u32> {
    match value {
        None => Some(default),
        Some(v) => {
            int_in(v, min.into(), max.into(), path, errs).and_then(|v| u32::try_from(v).ok())
        }
    }
}

/// A TCP/UDP port, 1..=65535.
pub(crate) fn port(value: i64, path: &str, errs: &mut Errors) -> Option<u16> {
    int_in(value, 1, 65_535, path, errs).and_then(|v| u16::try_from(v).ok())
}

/// An optional duration with a default, within bounds.
pub(crate) fn duration_or(
    value: Option<&RawDuration>,
    default: Duration,
    min: Duration,
    max: Duration,
    path: &str,
    errs: &mut Errors,
) -> Option<Duration> {
    match value {
        None => Some(default),
        Some(raw) => match duration::check(raw, min, max) {
            Ok(d) => Some(d),
            Err(msg) => {
                errs.push(path, msg);
                None
            }
        },
    }
}

/// An IP address usable as a VIP, backend or source address: not
/// unspecified, multicast, the IPv4 broadcast address, IPv4-mapped
/// (`::ffff:a.b.c.d`: write the IPv4 address) or IPv6 link-local.
pub(crate) fn unicast_ip(text: &str, path: &str, errs: &mut Errors) -> Option<IpAddr> {
    let addr: IpAddr = match text.parse() {
        Ok(a) => a,
        Err(_) => {
            errs.push(
                path,
                format!("must be an IPv4 or IPv6 address (got \"{text}\")"),
            );
            return None;
        }
    };
    if let IpAddr::V6(v6) = addr {
        if let Some(v4) = v6.to_ipv4_mapped() {
            // The dataplane keys IPv4 addresses in this very form, so it
            // would be taken for the IPv4 address (and the XDP program
            // passes IPv6 packets carrying such addresses to the kernel).
            errs.push(path, format!("IPv4-mapped IPv6 address: write it as {v4}"));
            return None;
        }
        if v6.is_unicast_link_local() {
            // Only meaningful with an interface (`fe80::1%eth0`), which
            // the file cannot give: without one the kernel refuses to
            // bind or connect to it (EINVAL), so probes, proxied requests
            // and an http/https listener's socket would all fail.
            errs.push(
                path,
                format!(
                    "{addr} is a link-local address, usable only with an interface, which \
                     cannot be given here: use a global or unique local (fd00::/8) address"
                ),
            );
            return None;
        }
    }
    let broadcast = matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
    if addr.is_unspecified() || addr.is_multicast() || broadcast {
        errs.push(path, format!("must be a unicast address (got {addr})"));
        return None;
    }
    Some(addr)
}

/// "IPv4" or "IPv6".
pub(crate) fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// True for a prime `n`.
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}
