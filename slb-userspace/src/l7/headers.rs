//! Header rewriting between client and backend.
//!
//! * Hop-by-hop fields (RFC 9110 §7.6.1) belong to one connection and are
//!   not forwarded: `Connection` and every field it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Transfer-Encoding`, `Upgrade`. For a
//!   WebSocket handshake `Connection: upgrade` and `Upgrade` are kept: the
//!   upgrade is what is being forwarded. A `Content-Length` beside
//!   `Transfer-Encoding` goes too (RFC 9112 §6.3).
//! * To the backend: `X-Forwarded-For` gets the client address appended
//!   (earlier proxies' entries kept); `X-Real-IP`, `X-Forwarded-Proto` and
//!   `X-Forwarded-Port` are set by the proxy, whatever the client sent
//!   (they describe this hop, which only the proxy knows). What backends
//!   also read for the client's scheme, host or address, and the proxy
//!   does not set, is removed: `Forwarded` (RFC 7239; Rack 3 prefers it to
//!   `X-Forwarded-Proto`, Spring reads its first element),
//!   `X-Forwarded-Host`, `X-Forwarded-Scheme`, `X-Forwarded-Ssl` (Rack).
//!   A client's would pass for the proxy's word: a plain-http client could
//!   claim https, or a host of its choosing for the links a backend
//!   builds. Without them backends fall back to `Host` and the fields
//!   above.
//! * `Expect` is not forwarded, whatever it expects (as nginx): the
//!   server library answers a client's `100-continue` itself when the
//!   proxy first reads the body, so the backend gets the body at once;
//!   passed on, a backend could answer it with a 417 or a `100 Continue`
//!   of its own for a request that needs neither.
//! * Several `Cookie` fields (HTTP/2 clients send one per cookie) are
//!   joined with "; " for the HTTP/1.1 backend (RFC 9113 §8.2.3).

use std::borrow::Cow;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Uri};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// End-to-end fields the backend does not get: what backends read as the
/// proxy's word on the client's scheme, host or address and the proxy
/// does not set (see the module docs), and `Expect` (see the module docs).
const NOT_FORWARDED: [HeaderName; 5] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-ssl"),
    header::EXPECT,
];

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
/// `Transfer-Encoding`'s index in [`HOP_BY_HOP`].
const TRANSFER_ENCODING_BIT: usize = 4;

/// What the proxy tells the backend about the client's connection.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded {
    pub client: std::net::IpAddr,
    /// "http" or "https".
    pub proto: &'static str,
    /// The listener's port.
    pub port: u16,
}

/// True when `headers` ask for a WebSocket upgrade (HTTP/1.1).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "upgrade")
        && has_token(headers, &header::UPGRADE, "websocket")
}

/// True when a comma-separated field `name` holds `token` (any case).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop fields; with `upgrade`, keeps the upgrade
/// handshake (`Connection: upgrade` and `Upgrade`). `Host` stays even when
/// `Connection` names it: the request was routed by it, and the backend
/// would otherwise get the request for its own address (nginx ignores such
/// names too).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    remove_hop_by_hop_and(headers, upgrade, &[]);
}

/// [`remove_hop_by_hop`], also removing the fields `extra` names, found in
/// the same pass over the field names.
fn remove_hop_by_hop_and(headers: &mut HeaderMap, upgrade: bool, extra: &[HeaderName]) {
    let upgrade_to = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let mut connection = headers.get_all(header::CONNECTION).iter();
    match (connection.next(), connection.next()) {
        (None, _) => {}
        (Some(one), None) => {
            // The usual case (`Connection: keep-alive`): nothing to
            // allocate, a field name is looked up without being built.
            let one = one.clone();
            for name in one.to_str().unwrap_or_default().split(',') {
                let name = name.trim();
                if !name.eq_ignore_ascii_case("host") {
                    headers.remove(name);
                }
            }
        }
        _ => {
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| n != header::HOST)
                .collect();
            for name in &named {
                headers.remove(name);
            }
        }
    }
    // One pass over the (few) fields, then a look-up only for those there:
    // bit i for the i-th name of `HOP_BY_HOP` followed by `extra`.
    debug_assert!(HOP_BY_HOP.len() + extra.len() <= 32);
    let hop = &HOP_BY_HOP;
    let listed = || hop.iter().chain(extra);
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = listed().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    for (i, name) in listed().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << TRANSFER_ENCODING_BIT) != 0 {
        // The chunks framed the message, not the length beside them (RFC
        // 9112 §6.3), and a proxy must drop that length before forwarding:
        // the next hop would frame the body by it (a response cut short,
        // or a connection out of step). The server library does this for
        // requests; the client library leaves it in responses.
        headers.remove(header::CONTENT_LENGTH);
    }
    if let Some(to) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, to);
    }
}

/// [`Forwarded`] as the header values the proxy sets, made once per
/// listener (proto, port) and connection (client).
#[derive(Debug, Clone)]
pub struct ForwardedValues {
    /// The client address (`X-Real-IP`, the last `X-Forwarded-For` entry).
    pub client: HeaderValue,
    pub proto: HeaderValue,
    pub port: HeaderValue,
}

impl ForwardedValues {
    pub fn new(fwd: &Forwarded) -> Self {
        Self {
            client: client_value(fwd.client),
            proto: HeaderValue::from_static(fwd.proto),
            port: HeaderValue::from(fwd.port),
        }
    }
}

/// The client address as a header value (IPv4-mapped IPv6 as IPv4).
pub fn client_value(client: std::net::IpAddr) -> HeaderValue {
    let text = client.to_canonical().to_string();
    // An IP address is always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Prepares the client's request header for the backend (see module docs).
pub fn to_backend(headers: &mut HeaderMap, fwd: &Forwarded, upgrade: bool) {
    to_backend_values(headers, &ForwardedValues::new(fwd), upgrade);
}

/// [`to_backend`] with the values made beforehand.
pub fn to_backend_values(headers: &mut HeaderMap, fwd: &ForwardedValues, upgrade: bool) {
    remove_hop_by_hop_and(headers, upgrade, &NOT_FORWARDED);

    if headers.contains_key(&X_FORWARDED_FOR) {
        let client = fwd.client.to_str().unwrap_or_default();
        let mut chain = String::with_capacity(64);
        for earlier in headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            chain.push_str(earlier);
            chain.push_str(", ");
        }
        chain.push_str(client);
        set(headers, X_FORWARDED_FOR, &chain);
    } else {
        headers.insert(X_FORWARDED_FOR, fwd.client.clone());
    }
    headers.insert(X_REAL_IP, fwd.client.clone());
    headers.insert(X_FORWARDED_PROTO, fwd.proto.clone());
    headers.insert(X_FORWARDED_PORT, fwd.port.clone());

    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_some() && cookies.next().is_some() {
        let cookies: Vec<&str> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if cookies.len() > 1 {
            let joined = cookies.join("; ");
            set(headers, header::COOKIE, &joined);
        }
    }
}

/// Prepares a backend's response header for the client.
pub fn to_client(headers: &mut HeaderMap, upgrade: bool) {
    remove_hop_by_hop(headers, upgrade);
}

/// Replaces every `name` field by one with `value` (dropped if not a valid
/// field value, which the values set here always are).
fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// The request's host name, lower-case, without port or trailing dot:
/// from `Host` (HTTP/1.1) or the URI authority (HTTP/2 `:authority`,
/// absolute-form requests). Borrowed unless it had to be lower-cased.
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(header::HOST)?.to_str().ok()?,
    };
    let raw = raw.rsplit('@').next().unwrap_or(raw);
    let host = if raw.starts_with('[') {
        // An IPv6 literal keeps its brackets.
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

/// What a request's framing fields get instead of being forwarded (RFC
/// 9112): 400 for more than one `Host`, one that is no host, or none in
/// an HTTP/1.1 request (§3.2); 501 for a transfer coding other than
/// chunked (§6.1): the server library has decoded the chunks, and passing
/// the rest on as if it were the body would corrupt it. HTTP/2 requests
/// may have no `Host` (`:authority` replaces it, RFC 9113 §8.3.1), but
/// one without `:authority` is routed by it, and the backend gets it as
/// sent: two would let the backend pick another than routing did.
/// A host in the request target (absolute-form, `:authority`) is checked
/// as `Host` is, as nginx checks the request line's: it is what the
/// request is routed and redirected by and what the backend gets as
/// `Host`, and the server library lets through what only looks like an
/// IP literal (`[zz]`, `[]`).
pub fn malformed(
    version: http::Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<http::StatusCode> {
    if let Some(a) = uri.authority() {
        let a = a.as_str();
        if !valid_host(a.rsplit('@').next().unwrap_or(a).as_bytes()) {
            return Some(http::StatusCode::BAD_REQUEST);
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let valid = match (hosts.next(), hosts.next()) {
        (None, _) => version != http::Version::HTTP_11,
        (Some(h), None) => valid_host(h.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !valid {
        return Some(http::StatusCode::BAD_REQUEST);
    }
    other_transfer_coding(headers).then_some(http::StatusCode::NOT_IMPLEMENTED)
}

/// A transfer coding other than one chunked (which the server and client
/// libraries decode, once): the rest would reach the other side as if it
/// were the content. Chunked twice (RFC 9112 §6.1 forbids it) is such a
/// case: the inner chunks would be passed on as the body.
pub fn other_transfer_coding(headers: &HeaderMap) -> bool {
    let mut chunked = 0;
    for t in headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
    {
        if !t.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return true;
        }
        chunked += 1;
    }
    chunked > 1
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a registered
/// name (unreserved characters, percent-encodings, sub-delimiters) or an
/// IPv6 address in brackets, and digits after the colon. Anything else (a
/// slash, a space, `[zz]`...) would end up in routing and in redirect URLs.
pub fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = h.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = std::str::from_utf8(&rest[..end]).ok();
        // No zone (`%25eth0`, RFC 6874): it names an interface of the
        // client's host, meaningless to this one and its backends.
        if literal
            .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return false;
        }
        match &rest[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&[][..], port),
            _ => return false,
        }
    } else {
        match h.iter().rposition(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i + 1..]),
            None => (h, &[][..]),
        }
    };
    let reg_name = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
    reg_name && port.iter().all(u8::is_ascii_digit)
}

/// The `Host` value for a request target's authority (without userinfo).
pub fn host_value(authority: &http::uri::Authority) -> Option<HeaderValue> {
    let a = authority.as_str();
    HeaderValue::from_str(a.rsplit('@').next().unwrap_or(a)).ok()
}

/// The client asked to keep an HTTP/1.0 connection open.
pub fn wants_keep_alive(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "keep-alive")
}

/// The bytes of request line and header fields, counted as on an HTTP/1.1
/// wire: `name: value\r\n` per field.
pub fn header_size(method: &http::Method, uri: &Uri, headers: &HeaderMap) -> usize {
    /// Counts what is written to it.
    struct Len(usize);
    impl std::fmt::Write for Len {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut target = Len(0);
    // Writing to `Len` cannot fail.
    let _ = std::fmt::Write::write_fmt(&mut target, format_args!("{uri}"));
    let line = method.as_str().len() + target.0 + 12;
    line + headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_framing() {
        use http::{StatusCode, Version};
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(*n, HeaderValue::from_static(v));
            }
            m
        };
        let origin: Uri = "/x".parse().unwrap();
        let ok = h(&[("host", "a.example")]);
        assert_eq!(malformed(Version::HTTP_11, &origin, &ok), None);
        assert_eq!(
            malformed(Version::HTTP_10, &origin, &HeaderMap::new()),
            None
        );
        assert_eq!(
            malformed(Version::HTTP_11, &origin, &HeaderMap::new()),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(malformed(Version::HTTP_2, &origin, &HeaderMap::new()), None);
        for v in [Version::HTTP_10, Version::HTTP_2] {
            assert_eq!(
                malformed(v, &origin, &h(&[("host", "a"), ("host", "b")])),
                Some(StatusCode::BAD_REQUEST)
            );
            assert_eq!(
                malformed(v, &origin, &h(&[("host", "a/b")])),
                Some(StatusCode::BAD_REQUEST)
            );
        }
        for (te, want) in [
            ("chunked", None),
            ("Chunked", None),
            ("gzip, chunked", Some(StatusCode::NOT_IMPLEMENTED)),
            ("identity", Some(StatusCode::NOT_IMPLEMENTED)),
            ("chunked, chunked", Some(StatusCode::NOT_IMPLEMENTED)),
        ] {
            let mut m = ok.clone();
            m.insert("transfer-encoding", HeaderValue::from_static(te));
            assert_eq!(malformed(Version::HTTP_11, &origin, &m), want, "{te}");
        }
        for bad in [
            "a.test/evil",
            "a b",
            "a.test:80x",
            "[::1",
            "[fe80::1%eth0]",
            "[fe80::1%25eth0]",
            "[zz]",
            "[]",
            "[1.2.3.4]",
            "[:::]",
            "[::1]x",
            "[::1]:80x",
            "a\"b",
        ] {
            let mut m = HeaderMap::new();
            m.insert("host", HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                malformed(Version::HTTP_11, &origin, &m),
                Some(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        for good in [
            "a.test",
            "a.test:8080",
            "[::1]:8080",
            "[::1]",
            "[2001:DB8::a]:80",
            "[::ffff:192.0.2.1]",
            "10.0.0.1",
            "xn--bcher-kva.example",
            "",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        // A host in the request target is checked as `Host` is (the
        // server library lets these through).
        for (target, want) in [
            ("http://[::1]:8080/x", None),
            ("http://user@a.example/x", None),
            ("http://[zz]/x", Some(StatusCode::BAD_REQUEST)),
            ("http://[]:80/x", Some(StatusCode::BAD_REQUEST)),
        ] {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(malformed(Version::HTTP_11, &uri, &ok), want, "{target}");
        }
        let a: http::uri::Authority = "user@a.example:8080".parse().unwrap();
        assert_eq!(host_value(&a).unwrap(), "a.example:8080");
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn fwd() -> Forwarded {
        Forwarded {
            client: "192.0.2.7".parse().unwrap(),
            proto: "https",
            port: 443,
        }
    }

    #[test]
    fn hop_by_hop_fields_are_removed() {
        let mut m = h(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut m, false);
        assert_eq!(m.len(), 1);
        assert!(m.contains_key("accept"));
    }

    #[test]
    fn a_length_beside_chunks_is_removed() {
        let mut m = h(&[("transfer-encoding", "chunked"), ("content-length", "3")]);
        remove_hop_by_hop(&mut m, false);
        assert!(m.is_empty(), "{m:?}");
        assert_eq!(HOP_BY_HOP[TRANSFER_ENCODING_BIT], header::TRANSFER_ENCODING);
        let mut m = h(&[("content-length", "3")]);
        remove_hop_by_hop(&mut m, false);
        assert_eq!(m.get("content-length").unwrap(), "3");
    }

    #[test]
    fn connection_cannot_remove_host() {
        for connection in [&["close, Host"][..], &["close", "host"][..]] {
            let mut m = h(&[("host", "www.example"), ("accept", "*/*")]);
            for c in connection {
                m.append("connection", c.parse().unwrap());
            }
            remove_hop_by_hop(&mut m, false);
            assert_eq!(m.get("host").unwrap(), "www.example", "{connection:?}");
        }
    }

    #[test]
    fn fields_named_in_connection_are_removed() {
        let mut m = h(&[
            ("connection", "Keep-Alive, X-A ,,x-b, bad name"),
            ("x-a", "1"),
            ("X-B", "2"),
            ("x-c", "3"),
        ]);
        remove_hop_by_hop(&mut m, false);
        assert_eq!(m.len(), 1);
        assert!(m.contains_key("x-c"));
        let mut m = h(&[
            ("connection", "x-a"),
            ("connection", "X-B"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
        ]);
        remove_hop_by_hop(&mut m, false);
        assert_eq!(m.len(), 1);
        assert!(m.contains_key("x-c"));
    }

    #[test]
    fn upgrade_handshake_is_kept() {
        let mut m = h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "x"),
        ]);
        assert!(is_websocket_upgrade(&m));
        remove_hop_by_hop(&mut m, true);
        assert_eq!(m.get("connection").unwrap(), "upgrade");
        assert_eq!(m.get("upgrade").unwrap(), "websocket");
        assert!(m.contains_key("sec-websocket-key"));
        assert!(!is_websocket_upgrade(&h(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_fields() {
        let mut m = h(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2, 10.0.0.1"),
            ("x-real-ip", "1.1.1.1"),
            ("x-forwarded-proto", "gopher"),
            ("forwarded", "for=1.1.1.1;proto=https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-scheme", "https"),
            ("x-forwarded-ssl", "on"),
            ("expect", "100-continue"),
        ]);
        to_backend(&mut m, &fwd(), false);
        for name in &NOT_FORWARDED {
            assert!(!m.contains_key(name), "{name}");
        }
        assert_eq!(
            m.get("x-forwarded-for").unwrap(),
            "203.0.113.1, 198.51.100.2, 10.0.0.1, 192.0.2.7"
        );
        assert_eq!(m.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(m.get("x-real-ip").unwrap(), "192.0.2.7");
        assert_eq!(m.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(m.get("x-forwarded-port").unwrap(), "443");

        let mut m = HeaderMap::new();
        let v4mapped = Forwarded {
            client: "::ffff:192.0.2.9".parse().unwrap(),
            ..fwd()
        };
        to_backend(&mut m, &v4mapped, false);
        assert_eq!(m.get("x-forwarded-for").unwrap(), "192.0.2.9");
    }

    #[test]
    fn cookies_are_joined() {
        let mut m = h(&[("cookie", "a=1"), ("cookie", "b=2")]);
        to_backend(&mut m, &fwd(), false);
        assert_eq!(m.get_all("cookie").iter().count(), 1);
        assert_eq!(m.get("cookie").unwrap(), "a=1; b=2");
    }

    #[test]
    fn host_from_header_or_authority() {
        let hs = h(&[("host", "WWW.Example.COM.:8080")]);
        assert_eq!(
            request_host(&"/x".parse().unwrap(), &hs).as_deref(),
            Some("www.example.com")
        );
        let uri: Uri = "https://api.example.com/x".parse().unwrap();
        assert_eq!(
            request_host(&uri, &HeaderMap::new()).as_deref(),
            Some("api.example.com")
        );
        let v6 = h(&[("host", "[2001:db8::1]:80")]);
        assert_eq!(
            request_host(&"/".parse().unwrap(), &v6).as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(request_host(&"/".parse().unwrap(), &HeaderMap::new()), None);
    }

    #[test]
    fn header_size_counts_fields() {
        let m = h(&[("a", "bc")]);
        let size = header_size(&http::Method::GET, &"/x".parse().unwrap(), &m);
        // "GET /x HTTP/1.1\r\n" = 17, "a: bc\r\n" = 7
        assert_eq!(size, 3 + 2 + 12 + 7);
    }
}
