//! Cookie persistence (SPEC §5): a client keeps going to the backend that
//! served it.
//!
//! * `insert_cookie`: the proxy sets its own cookie (`SERVERID` unless
//!   renamed) whose value names the backend: a 16-hex-digit hash of the
//!   backend's address (stable across proxies and restarts; the address
//!   itself is not shown to clients). `Max-Age` is the `timeout`. One
//!   cookie serves every group of the listener (and every listener of the
//!   host: cookies do not tell ports apart), so its value is a list of
//!   ids, `<id>.<id>...`, at most one per group the client uses (up to
//!   [`MAX_IDS`], the latest first): a response of one group replaces the
//!   id of its own backends and keeps the others. With a single id, a
//!   client moving between `/` and an `/api/` group got a new cookie on
//!   every switch and kept its backend in neither.
//! * `rewrite_cookie`: the application's own cookie (e.g. `SESSIONID`)
//!   carries the backend: the proxy rewrites `Set-Cookie: SESSIONID=abc` to
//!   `SESSIONID=<id>~abc`, and on requests routes by `<id>` and hands the
//!   backend `SESSIONID=abc` again (HAProxy's `cookie ... prefix`). No
//!   application cookie, no persistence.
//!
//! A cookie naming a backend that is down or unknown (removed from the
//! configuration) is ignored: the request is scheduled as usual and, with
//! `insert_cookie`, the client gets a new cookie (whose list keeps the ids
//! of other groups' backends).
//!
//! The proxy never inserts its cookie into a response where that would
//! break the response's meaning:
//! * interim responses (1xx, including 101 Switching Protocols);
//! * 304 Not Modified (its headers update a cached response, possibly in a
//!   shared cache, which would then hand one client's cookie to others);
//! * responses a shared cache may store (`Cache-Control: public` or
//!   `s-maxage`), for the same reason;
//! * responses where the backend itself sets a cookie of that name;
//! * the proxy's own error pages and redirects (no backend served them).

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::balance::hash_bytes;
use crate::config::{CookieMode, CookiePersistence};

/// Separates the backend id from the application's value in
/// `rewrite_cookie` mode (a valid cookie-octet, as HAProxy uses).
const PREFIX_SEP: char = '~';

/// Separates the ids of an `insert_cookie` value (a valid cookie-octet
/// that no id contains).
const ID_SEP: &str = ".";

/// The most ids an `insert_cookie` value keeps: a listener has up to 21
/// groups, but a client rarely uses more than a few; ids of removed
/// backends must fall off the end. 8 ids are 135 bytes.
pub const MAX_IDS: usize = 8;

/// The backend ids a persistence cookie value names, in order (a value of
/// `rewrite_cookie` mode, or an old `insert_cookie` one, holds one).
pub fn ids(value: &str) -> impl Iterator<Item = &str> {
    value.split(ID_SEP).filter(|id| is_id(id))
}

/// The id that names a backend in cookies.
pub fn backend_id(addr: SocketAddr) -> String {
    format!("{:016x}", hash_bytes(addr.to_string().as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` header(s).
pub fn request_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    mode: CookieMode,
    cookie: String,
    max_age: Option<Duration>,
}

impl Persistence {
    pub fn new(cfg: &CookiePersistence) -> Self {
        Self {
            mode: cfg.mode,
            cookie: cfg.cookie.clone(),
            max_age: cfg.timeout,
        }
    }

    /// The backend ids the request's cookie names (see [`ids`]), if any.
    /// In `rewrite_cookie` mode the id is removed from the `Cookie` header,
    /// so the backend sees its own value.
    pub fn on_request(&self, headers: &mut HeaderMap) -> Option<String> {
        match self.mode {
            CookieMode::InsertCookie => request_cookie(headers, &self.cookie),
            CookieMode::RewriteCookie => self.strip_prefix(headers),
        }
    }

    /// Every prefixed value of the cookie loses its prefix (a client may
    /// hold several, set under different paths, and the backend must see
    /// none of ours); the first names the backend.
    fn strip_prefix(&self, headers: &mut HeaderMap) -> Option<String> {
        let mut found: Option<String> = None;
        let mut rewritten: Vec<HeaderValue> = Vec::new();
        for v in headers.get_all(COOKIE).iter() {
            let Ok(text) = v.to_str() else {
                rewritten.push(v.clone());
                continue;
            };
            let mut pairs: Vec<String> = Vec::new();
            for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let prefixed = pair
                    .split_once('=')
                    .filter(|(n, _)| *n == self.cookie)
                    .and_then(|(n, value)| {
                        let (id, rest) = value.split_once(PREFIX_SEP)?;
                        is_id(id).then_some((n, id, rest))
                    });
                match prefixed {
                    Some((n, id, rest)) => {
                        found.get_or_insert_with(|| id.to_owned());
                        pairs.push(format!("{n}={rest}"));
                    }
                    None => pairs.push(pair.to_owned()),
                }
            }
            rewritten.push(HeaderValue::from_str(&pairs.join("; ")).unwrap_or_else(|_| v.clone()));
        }
        if found.is_some() {
            headers.remove(COOKIE);
            for v in rewritten {
                headers.append(COOKIE, v);
            }
        }
        found
    }

    /// Adjusts a backend's response: `served_by` is the id of the backend
    /// that answered, `requested` the ids the request's cookie named (as
    /// [`Persistence::on_request`] gave them), `in_group` tells the ids of
    /// the backends of the request's group. `secure`: the client
    /// connection is TLS (the inserted cookie gets `Secure`).
    pub fn on_response(
        &self,
        status: StatusCode,
        headers: &mut HeaderMap,
        served_by: &str,
        requested: Option<&str>,
        in_group: &dyn Fn(&str) -> bool,
        secure: bool,
    ) {
        match self.mode {
            CookieMode::InsertCookie => {
                let requested = requested.unwrap_or("");
                if ids(requested).any(|id| id == served_by)
                    || !may_insert(status, headers, &self.cookie)
                {
                    return;
                }
                // This group's id first; those of other groups (and other
                // listeners of the host) kept, so that their clients stay.
                let mut list: Vec<&str> = vec![served_by];
                for id in ids(requested) {
                    if list.len() == MAX_IDS {
                        break;
                    }
                    if !in_group(id) && !list.contains(&id) {
                        list.push(id);
                    }
                }
                let mut value = format!("{}={}; Path=/; HttpOnly", self.cookie, list.join(ID_SEP));
                if let Some(age) = self.max_age {
                    value.push_str(&format!("; Max-Age={}", age.as_secs()));
                }
                if secure {
                    value.push_str("; Secure");
                }
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.append(SET_COOKIE, v);
                }
            }
            CookieMode::RewriteCookie => self.add_prefix(headers, served_by),
        }
    }

    fn add_prefix(&self, headers: &mut HeaderMap, id: &str) {
        let prefix = format!("{}=", self.cookie);
        let values: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
        if !values
            .iter()
            .any(|v| v.as_bytes().starts_with(prefix.as_bytes()))
        {
            return;
        }
        headers.remove(SET_COOKIE);
        for v in values {
            let rewritten = v
                .to_str()
                .ok()
                .and_then(|t| t.strip_prefix(prefix.as_str()))
                .and_then(|rest| {
                    HeaderValue::from_str(&format!("{prefix}{id}{PREFIX_SEP}{rest}")).ok()
                });
            headers.append(SET_COOKIE, rewritten.unwrap_or(v));
        }
    }
}

/// True for what [`backend_id`] makes.
fn is_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// May the proxy add its cookie to this response? See the module docs.
pub fn may_insert(status: StatusCode, headers: &HeaderMap, cookie: &str) -> bool {
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return false;
    }
    let shared_cacheable = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "public" || d.starts_with("s-maxage"));
    if shared_cacheable {
        return false;
    }
    let prefix = format!("{cookie}=");
    !headers
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert() -> Persistence {
        Persistence::new(&CookiePersistence {
            mode: CookieMode::InsertCookie,
            cookie: "SERVERID".into(),
            timeout: Some(Duration::from_secs(1000)),
        })
    }

    fn rewrite() -> Persistence {
        Persistence::new(&CookiePersistence {
            mode: CookieMode::RewriteCookie,
            cookie: "SESSIONID".into(),
            timeout: None,
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn set_cookies(h: &HeaderMap) -> Vec<String> {
        h.get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn ids_are_stable_and_opaque() {
        let a = backend_id("10.0.1.11:8080".parse().unwrap());
        assert_eq!(a, backend_id("10.0.1.11:8080".parse().unwrap()));
        assert_ne!(a, backend_id("10.0.1.12:8080".parse().unwrap()));
        assert!(is_id(&a));
        assert!(!a.contains("10.0"));
    }

    #[test]
    fn reads_cookies_from_every_header() {
        let h = headers(&[("cookie", "a=1; b=2"), ("cookie", "SERVERID=abc")]);
        assert_eq!(request_cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(request_cookie(&h, "SERVERID").as_deref(), Some("abc"));
        assert_eq!(request_cookie(&h, "c"), None);
    }

    #[test]
    fn insert_sets_the_cookie_once() {
        let p = insert();
        let mut req = headers(&[("cookie", "x=1")]);
        assert_eq!(p.on_request(&mut req), None);
        let mut h = HeaderMap::new();
        p.on_response(
            StatusCode::OK,
            &mut h,
            "00000000000000aa",
            None,
            &|_| false,
            true,
        );
        assert_eq!(
            set_cookies(&h),
            ["SERVERID=00000000000000aa; Path=/; HttpOnly; Max-Age=1000; Secure"]
        );
        // The client already names this backend: nothing to add.
        let mut h = HeaderMap::new();
        p.on_response(
            StatusCode::OK,
            &mut h,
            "00000000000000aa",
            Some("00000000000000aa"),
            &|_| false,
            false,
        );
        assert!(set_cookies(&h).is_empty());
        // A stale cookie (another backend) is replaced.
        let mut h = HeaderMap::new();
        p.on_response(
            StatusCode::OK,
            &mut h,
            "00000000000000aa",
            Some("00000000000000bb"),
            &|id| id == "00000000000000bb",
            false,
        );
        assert_eq!(
            set_cookies(&h),
            ["SERVERID=00000000000000aa; Path=/; HttpOnly; Max-Age=1000"]
        );
    }

    #[test]
    fn insert_keeps_the_ids_of_other_groups() {
        let p = insert();
        let (a, b, x) = ("00000000000000aa", "00000000000000bb", "00000000000000cc");
        let ours = |id: &str| id == a || id == b;
        // Another group's id: this group's goes first, the other stays.
        let mut h = HeaderMap::new();
        p.on_response(StatusCode::OK, &mut h, a, Some(x), &ours, false);
        let value = format!("{a}.{x}");
        assert!(set_cookies(&h)[0].starts_with(&format!("SERVERID={value};")));
        // The list already names the backend that served: nothing to add,
        // whatever its place.
        let mut req = headers(&[("cookie", &format!("SERVERID={x}.{a}"))]);
        let got = p.on_request(&mut req).unwrap();
        assert_eq!(ids(&got).collect::<Vec<_>>(), [x, a]);
        let mut h = HeaderMap::new();
        p.on_response(StatusCode::OK, &mut h, a, Some(&got), &ours, false);
        assert!(set_cookies(&h).is_empty());
        // Moved within the group (a down): a's id is replaced, not kept.
        let mut h = HeaderMap::new();
        p.on_response(StatusCode::OK, &mut h, b, Some(&value), &ours, false);
        assert!(set_cookies(&h)[0].starts_with(&format!("SERVERID={b}.{x};")));
        // Bounded: the oldest ids fall off; what is no id is dropped.
        let many: Vec<String> = (0..20).map(|i| format!("{i:016x}")).collect();
        let long = format!("junk.{}", many.join("."));
        let mut h = HeaderMap::new();
        p.on_response(StatusCode::OK, &mut h, a, Some(&long), &ours, false);
        let set = set_cookies(&h)[0].clone();
        let v = set
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("SERVERID=")
            .unwrap();
        let mut want = vec![a.to_owned()];
        want.extend(many[..MAX_IDS - 1].iter().cloned());
        assert_eq!(v, want.join("."));
    }

    #[test]
    fn insert_skips_responses_it_would_break() {
        let p = insert();
        for (status, hs) in [
            (StatusCode::SWITCHING_PROTOCOLS, vec![]),
            (StatusCode::NOT_MODIFIED, vec![]),
            (
                StatusCode::OK,
                vec![("cache-control", "public, max-age=60")],
            ),
            (
                StatusCode::OK,
                vec![("cache-control", "max-age=0, s-maxage=600")],
            ),
            (StatusCode::OK, vec![("set-cookie", "SERVERID=app; Path=/")]),
        ] {
            let mut h = headers(&hs);
            let before = set_cookies(&h);
            p.on_response(status, &mut h, "00000000000000aa", None, &|_| false, false);
            assert_eq!(set_cookies(&h), before, "{status} {hs:?}");
        }
        let mut h = headers(&[
            ("cache-control", "private, max-age=60"),
            ("set-cookie", "a=b"),
        ]);
        p.on_response(
            StatusCode::OK,
            &mut h,
            "00000000000000aa",
            None,
            &|_| false,
            false,
        );
        assert_eq!(set_cookies(&h).len(), 2);
    }

    #[test]
    fn rewrite_prefixes_and_strips_the_app_cookie() {
        let p = rewrite();
        let mut h = headers(&[
            ("set-cookie", "SESSIONID=abc123; Path=/; HttpOnly"),
            ("set-cookie", "other=1"),
        ]);
        p.on_response(
            StatusCode::OK,
            &mut h,
            "00000000000000aa",
            None,
            &|_| false,
            false,
        );
        assert_eq!(
            set_cookies(&h),
            [
                "SESSIONID=00000000000000aa~abc123; Path=/; HttpOnly",
                "other=1"
            ]
        );
        let mut req = headers(&[("cookie", "x=1; SESSIONID=00000000000000aa~abc123; y=2")]);
        assert_eq!(p.on_request(&mut req).as_deref(), Some("00000000000000aa"));
        assert_eq!(
            req.get(COOKIE).unwrap().to_str().unwrap(),
            "x=1; SESSIONID=abc123; y=2"
        );
        // Two of them (set under two paths): the backend sees neither
        // prefix; the first routes.
        let mut req = headers(&[(
            "cookie",
            "SESSIONID=00000000000000aa~abc; SESSIONID=00000000000000bb~old",
        )]);
        assert_eq!(p.on_request(&mut req).as_deref(), Some("00000000000000aa"));
        assert_eq!(
            req.get(COOKIE).unwrap().to_str().unwrap(),
            "SESSIONID=abc; SESSIONID=old"
        );
        // A value the proxy did not prefix is left alone.
        let mut req = headers(&[("cookie", "SESSIONID=plain")]);
        assert_eq!(p.on_request(&mut req), None);
        assert_eq!(req.get(COOKIE).unwrap(), "SESSIONID=plain");
        // No app cookie in the response: nothing to rewrite, nothing added.
        let mut h = HeaderMap::new();
        p.on_response(
            StatusCode::OK,
            &mut h,
            "00000000000000aa",
            None,
            &|_| false,
            false,
        );
        assert!(set_cookies(&h).is_empty());
    }
}
