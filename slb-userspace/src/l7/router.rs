//! Forwarding rules: which backend group serves a request.
//!
//! A rule matches on host (exact, or `*.suffix` for any name ending in
//! `.suffix`), on a path prefix, or both. Of the matching rules the most
//! specific wins, as nginx picks a server by name and then a location by
//! its longest prefix: an exact host beats a wildcard, a longer wildcard
//! suffix beats a shorter one, any host beats none; then the longer path
//! prefix wins; on a tie, the earlier rule. No match: the default group.
//!
//! Path prefixes match the path as nginx matches locations, not as the
//! client spelled it: percent-encodings decoded (`%2F` too), `//` merged,
//! `.` and `..` segments resolved (never above the root), the query left
//! out. Backends commonly read `//admin/`, `/%61dmin/`, `/./admin/` and
//! `/api/../admin/` as `/admin/`; matched as sent, those would slip past
//! an `/admin/` rule to another group. The backend still gets the target
//! as sent (as nginx's `proxy_pass` without a URI passes it); the rule's
//! own prefix is read the same way. Nothing else is normalised, as in
//! nginx: case, `\` and `;` path parameters stay as sent.

use std::borrow::Cow;

use crate::config::Rule;

/// Index of the default group (the listener's own backends).
pub const DEFAULT_GROUP: usize = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `.example.com` for `*.example.com`.
    Suffix(String),
}

impl HostMatch {
    /// How specific a match is (higher wins), or `None` for no match.
    fn score(&self, host: Option<&str>) -> Option<usize> {
        match (self, host) {
            (HostMatch::Any, _) => Some(0),
            (HostMatch::Exact(h), Some(host)) if h == host => Some(usize::MAX),
            (HostMatch::Suffix(s), Some(host))
                if host.len() > s.len() && host.ends_with(s.as_str()) =>
            {
                Some(s.len())
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    host: HostMatch,
    /// Normalised (see the module docs).
    path: Vec<u8>,
    group: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    rules: Vec<CompiledRule>,
}

impl Router {
    /// `group_index` maps a rule's group name to its index (0 for
    /// "default"); validation guarantees the names exist, an unknown one
    /// falls back to the default group.
    pub fn new(rules: &[Rule], group_index: impl Fn(&str) -> Option<usize>) -> Self {
        let rules = rules
            .iter()
            .map(|r| CompiledRule {
                host: match &r.host {
                    None => HostMatch::Any,
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                        None => HostMatch::Exact(h.to_ascii_lowercase()),
                    },
                },
                path: r
                    .path
                    .as_deref()
                    .map(|p| normalise(p).into_owned())
                    .unwrap_or_default(),
                group: group_index(&r.group).unwrap_or(DEFAULT_GROUP),
            })
            .collect();
        Self { rules }
    }

    /// The group for a request to `host` (lower-case, without port) and
    /// `path` (as received: it is normalised here).
    pub fn route(&self, host: Option<&str>, path: &str) -> usize {
        if self.rules.is_empty() {
            // The common case: no path to normalise for nothing.
            return DEFAULT_GROUP;
        }
        // An IPv6 literal in the form rules hold it: `[2001:DB8:0::10]`
        // and `[2001:db8::10]` are one host.
        let canonical = host.and_then(canonical_ipv6);
        let host = canonical.as_deref().or(host);
        let path = normalise(path);
        let mut best: Option<((usize, usize), usize)> = None;
        for r in &self.rules {
            let Some(host_score) = r.host.score(host) else {
                continue;
            };
            if !path.starts_with(&r.path) {
                continue;
            }
            let score = (host_score, r.path.len());
            // Strictly greater: on a tie the earlier rule stays.
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, r.group));
            }
        }
        best.map_or(DEFAULT_GROUP, |(_, g)| g)
    }
}

/// `[addr]` in the canonical form of the IPv6 address, for a bracketed
/// host that is not already in it.
fn canonical_ipv6(host: &str) -> Option<String> {
    let literal = host.strip_prefix('[')?.strip_suffix(']')?;
    let canonical = format!("[{}]", literal.parse::<std::net::Ipv6Addr>().ok()?);
    (canonical != host).then_some(canonical)
}

/// The path rules match (see the module docs): decoded, `//` merged, `.`
/// and `..` resolved. Borrowed when there is nothing to do (the usual
/// case), and for what is not an absolute path (`*`).
pub fn normalise(path: &str) -> Cow<'_, [u8]> {
    let raw = path.as_bytes();
    let plain = !raw.contains(&b'%') && !raw.windows(2).any(|w| w == b"//" || w == b"/.");
    if plain || raw.first() != Some(&b'/') {
        return Cow::Borrowed(raw);
    }
    // Decoded before the segments are read, as nginx does: `%2e%2e` is a
    // `..`, `%2F` a separator. One pass: `%252e` stays `%2e`.
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = match raw.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(b) => {
                decoded.push(b);
                i += 3;
            }
            // Not an escape: kept as it is.
            None => {
                decoded.push(raw[i]);
                i += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    // Where each kept segment starts in `out`, for `..` to go back to.
    let mut starts = Vec::new();
    // The path ends with a slash (an empty, `.` or `..` last segment).
    let mut trailing = false;
    for seg in decoded.split(|&b| b == b'/').skip(1) {
        trailing = true;
        match seg {
            b"" | b"." => {}
            b".." => {
                if let Some(start) = starts.pop() {
                    out.truncate(start);
                }
            }
            _ => {
                trailing = false;
                starts.push(out.len());
                out.push(b'/');
                out.extend_from_slice(seg);
            }
        }
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: Option<&str>, path: Option<&str>, group: &str) -> Rule {
        Rule {
            host: host.map(str::to_owned),
            path: path.map(str::to_owned),
            group: group.to_owned(),
        }
    }

    fn router(rules: &[Rule]) -> Router {
        let names = ["default", "api", "static", "www", "admin", "wild", "deep"];
        Router::new(rules, |n| names.iter().position(|x| *x == n))
    }

    #[test]
    fn no_rule_is_the_default_group() {
        assert_eq!(router(&[]).route(Some("a.example"), "/"), DEFAULT_GROUP);
        let r = router(&[rule(None, Some("/api/"), "api")]);
        assert_eq!(r.route(None, "/other"), DEFAULT_GROUP);
    }

    #[test]
    fn longest_path_prefix_wins() {
        let r = router(&[
            rule(None, Some("/"), "www"),
            rule(None, Some("/api/"), "api"),
            rule(None, Some("/api/admin/"), "admin"),
        ]);
        assert_eq!(r.route(None, "/index.html"), 3);
        assert_eq!(r.route(None, "/api/users"), 1);
        assert_eq!(r.route(None, "/api/admin/x"), 4);
        // A prefix is a plain string prefix.
        assert_eq!(r.route(None, "/api"), 3);
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let r = router(&[
            rule(None, Some("/"), "static"),
            rule(Some("*.example.com"), None, "wild"),
            rule(Some("*.deep.example.com"), None, "deep"),
            rule(Some("www.example.com"), None, "www"),
        ]);
        assert_eq!(r.route(Some("www.example.com"), "/x"), 3);
        assert_eq!(r.route(Some("img.example.com"), "/x"), 5);
        assert_eq!(r.route(Some("a.b.example.com"), "/x"), 5, "any depth");
        assert_eq!(r.route(Some("x.deep.example.com"), "/x"), 6);
        // The wildcard needs a label before the suffix.
        assert_eq!(r.route(Some("example.com"), "/x"), 2);
        assert_eq!(r.route(None, "/x"), 2);
    }

    #[test]
    fn an_ipv6_host_matches_in_any_spelling() {
        // Rules hold an IPv6 host in canonical form (see config).
        let r = router(&[rule(Some("[2001:db8::10]"), None, "api")]);
        for host in ["[2001:db8::10]", "[2001:db8:0:0::10]", "[2001:0db8::0010]"] {
            assert_eq!(r.route(Some(host), "/"), 1, "{host}");
        }
        assert_eq!(r.route(Some("[2001:db8::11]"), "/"), 0);
        assert_eq!(r.route(Some("[zz]"), "/"), 0);
    }

    #[test]
    fn host_and_path_together() {
        let r = router(&[
            rule(Some("api.example.com"), Some("/v2/"), "admin"),
            rule(Some("api.example.com"), None, "api"),
            rule(None, Some("/v2/"), "static"),
        ]);
        assert_eq!(r.route(Some("api.example.com"), "/v2/x"), 4);
        assert_eq!(r.route(Some("api.example.com"), "/v1/x"), 1);
        assert_eq!(r.route(Some("other.example.com"), "/v2/x"), 2);
    }

    #[test]
    fn paths_are_normalised() {
        for (raw, want) in [
            ("/", "/"),
            ("/admin/x", "/admin/x"),
            ("//admin//x", "/admin/x"),
            ("/%61dmin/", "/admin/"),
            ("/./admin/.", "/admin/"),
            ("/api/../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/../../admin", "/admin"),
            ("/%2e%2E/admin", "/admin"),
            ("/admin%2fx", "/admin/x"),
            ("/%252e", "/%2e"),
            ("/a%zz%4", "/a%zz%4"),
            ("/..", "/"),
            ("/.well-known/x", "/.well-known/x"),
            ("*", "*"),
        ] {
            assert_eq!(normalise(raw).as_ref(), want.as_bytes(), "{raw}");
        }
        assert!(matches!(normalise("/api/v1/users"), Cow::Borrowed(_)));
        // Decoding may leave bytes that are no UTF-8: matched as bytes.
        assert_eq!(normalise("/%ff/").as_ref(), b"/\xff/");
    }

    #[test]
    fn rules_match_the_normalised_path() {
        let r = router(&[
            rule(None, Some("/admin/"), "admin"),
            rule(None, Some("/a%70i/"), "api"),
        ]);
        for p in ["//admin/x", "/%61dmin/x", "/./admin/x", "/api/../admin/x"] {
            assert_eq!(r.route(None, p), 4, "{p}");
        }
        assert_eq!(
            r.route(None, "/api/x"),
            1,
            "the rule's prefix is read alike"
        );
        assert_eq!(r.route(None, "/admin/../x"), DEFAULT_GROUP);
        // As nginx: case, `\` and `;` parameters are matched as sent
        // (the README says what a rule then does not catch).
        for p in ["/ADMIN/x", "/admin\\x", "/admin;v=1/x"] {
            assert_eq!(r.route(None, p), DEFAULT_GROUP, "{p}");
        }
        let r = router(&[rule(None, Some("/admin"), "admin")]);
        for p in ["/admin\\x", "/admin;v=1/x"] {
            assert_eq!(r.route(None, p), 4, "{p}");
        }
    }

    #[test]
    fn ties_go_to_the_earlier_rule() {
        let r = router(&[
            rule(None, Some("/a"), "api"),
            rule(None, Some("/a"), "static"),
        ]);
        assert_eq!(r.route(None, "/abc"), 1);
    }

    #[test]
    fn default_can_be_named() {
        let r = router(&[
            rule(None, Some("/"), "api"),
            rule(None, Some("/pub/"), "default"),
        ]);
        assert_eq!(r.route(None, "/pub/x"), DEFAULT_GROUP);
        assert_eq!(r.route(None, "/x"), 1);
    }
}
