//! Optional gzip of responses (`gzip = true`): compressible content the
//! backend sent uncompressed, to clients that accept gzip.
//!
//! Not compressed: 1xx, 204, 206 and 304 responses; bodies already
//! encoded (`Content-Encoding`), ranges (`Content-Range`),
//! `Cache-Control: no-transform`, bodies declared shorter than
//! `MIN_LENGTH`, event streams (gzip would hold events back), and types
//! that do not compress (images, video, archives...). A compressed
//! response loses `Content-Length` (it is streamed) and `Accept-Ranges`
//! (ranges are served uncompressed), gets `Vary: Accept-Encoding`, and a
//! strong `ETag` becomes weak (the bytes differ, the content does not),
//! as nginx does. A response that would be
//! compressed for a client accepting gzip gets `Vary: Accept-Encoding`
//! also when it is not (caches must tell the two apart), and a HEAD
//! request gets the header its GET would get (RFC 9110 §9.3.2).

use futures_util::TryStreamExt;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyDataStream, StreamBody};
use hyper::body::Frame;

use super::body::{boxed, Body};

/// Smaller bodies gain nothing from gzip.
pub const MIN_LENGTH: u64 = 256;

/// Does the client accept gzip (`gzip` or `*` with a q-value above 0)?
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip: Option<bool> = None;
    let mut star: Option<bool> = None;
    for item in headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_positive = parts
            .filter_map(|p| {
                let p = p.trim();
                p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
            })
            .all(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q_positive),
            "*" => star = Some(q_positive),
            _ => {}
        }
    }
    gzip.or(star).unwrap_or(false)
}

/// A media type worth compressing.
fn compressible(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "text/event-stream" {
        return false;
    }
    mime.starts_with("text/")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/xml"
                | "application/wasm"
                | "application/x-www-form-urlencoded"
                | "image/x-icon"
                | "font/ttf"
                | "font/otf"
        )
}

/// What gzip does to a response (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Not a response gzip applies to: untouched.
    Untouched,
    /// One that would be compressed, for a client that does not accept
    /// gzip: sent as it is, with `Vary: Accept-Encoding`.
    Vary,
    /// Compressed: header rewritten, and the body too unless the request
    /// was HEAD.
    Compress,
}

/// What to do with this response to this request.
pub fn plan(request: &HeaderMap, status: StatusCode, response: &HeaderMap) -> Plan {
    if !candidate(status, response) {
        Plan::Untouched
    } else if accepts_gzip(request) {
        Plan::Compress
    } else {
        Plan::Vary
    }
}

/// Would this response be compressed for a client accepting gzip?
fn candidate(status: StatusCode, response: &HeaderMap) -> bool {
    if status.is_informational() || matches!(status.as_u16(), 204 | 206 | 304) {
        return false;
    }
    let encoded = response
        .get(CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let no_transform = response
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    let short = response
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < MIN_LENGTH);
    let type_ok = response
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(compressible);
    !encoded && !no_transform && !short && type_ok && !response.contains_key(CONTENT_RANGE)
}

/// Adds `Vary: Accept-Encoding` unless the response varies on it (or on
/// everything) already.
pub fn add_vary(headers: &mut HeaderMap) {
    let varies = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let v = v.trim();
            v == "*" || v.eq_ignore_ascii_case("accept-encoding")
        });
    if !varies {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Rewrites the header for a gzip body (also for HEAD, whose GET would
/// get one).
pub fn compressed_header(headers: &mut HeaderMap) {
    headers.remove(CONTENT_LENGTH);
    // The backend's ranges are of the uncompressed bytes (a range request
    // gets them, 206 is never compressed): a client resuming this body by
    // range would splice those into gzip. nginx's gzip drops it too.
    headers.remove(ACCEPT_RANGES);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    add_vary(headers);
    if let Some(tag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
        if !tag.starts_with("W/") {
            if let Ok(weak) = HeaderValue::from_str(&format!("W/{tag}")) {
                headers.insert(ETAG, weak);
            }
        }
    }
}

/// Rewrites the header for a gzip body and returns that body.
pub fn compress(headers: &mut HeaderMap, body: Body) -> Body {
    compressed_header(headers);
    let data = BodyDataStream::new(body).map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(data);
    let encoder = async_compression::tokio::bufread::GzipEncoder::new(reader);
    let frames = tokio_util::io::ReaderStream::new(encoder).map_ok(Frame::data);
    boxed(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip(&h(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&h(&[(
            "accept-encoding",
            "br;q=1.0, gzip;q=0.8"
        )])));
        assert!(!accepts_gzip(&h(&[("accept-encoding", "gzip;q=0")])));
        assert!(accepts_gzip(&h(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&h(&[(
            "accept-encoding",
            "*;q=0.5, gzip;q=0"
        )])));
        assert!(!accepts_gzip(&h(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn decides_what_to_compress() {
        let should_compress =
            |req: &HeaderMap, status, res: &HeaderMap| plan(req, status, res) == Plan::Compress;
        let req = h(&[("accept-encoding", "gzip")]);
        let html = h(&[("content-type", "text/html; charset=utf-8")]);
        assert_eq!(plan(&req, StatusCode::OK, &html), Plan::Compress);
        // The same response for a client without gzip: a variant to tell
        // apart.
        assert_eq!(plan(&HeaderMap::new(), StatusCode::OK, &html), Plan::Vary);
        assert_eq!(
            plan(
                &HeaderMap::new(),
                StatusCode::OK,
                &h(&[("content-type", "image/png")])
            ),
            Plan::Untouched
        );
        assert!(!should_compress(&req, StatusCode::NOT_MODIFIED, &html));
        for extra in [
            ("content-encoding", "br"),
            ("cache-control", "public, no-transform"),
            ("content-length", "100"),
            ("content-range", "bytes 0-9/100"),
        ] {
            let mut r = html.clone();
            r.append(extra.0, HeaderValue::from_static(extra.1));
            assert!(!should_compress(&req, StatusCode::OK, &r), "{extra:?}");
        }
        for (ct, yes) in [
            ("application/json", true),
            ("application/problem+json", true),
            ("image/svg+xml", true),
            ("image/png", false),
            ("application/zip", false),
            ("text/event-stream", false),
        ] {
            let r = h(&[("content-type", ct)]);
            assert_eq!(should_compress(&req, StatusCode::OK, &r), yes, "{ct}");
        }
    }

    #[tokio::test]
    async fn compresses_the_body() {
        let text = "hello gzip ".repeat(200);
        let mut headers = h(&[
            ("content-length", "2200"),
            ("etag", "\"abc\""),
            ("vary", "Origin"),
            ("accept-ranges", "bytes"),
        ]);
        let body = compress(&mut headers, super::super::body::full(text.clone()));
        assert_eq!(headers[CONTENT_ENCODING], "gzip");
        assert!(!headers.contains_key(CONTENT_LENGTH));
        assert!(!headers.contains_key(ACCEPT_RANGES));
        assert_eq!(headers[ETAG], "W/\"abc\"");
        assert_eq!(headers.get_all(VARY).iter().count(), 2);
        let gz = body.collect().await.unwrap().to_bytes();
        assert!(gz.len() < text.len() / 4);
        use async_compression::tokio::bufread::GzipDecoder;
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        GzipDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, text);
    }
}
