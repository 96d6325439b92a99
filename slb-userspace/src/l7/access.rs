//! The access log: one line per request, `tracing` target `slb::access`
//! at info level:
//!
//! ```text
//! 2025-01-31T12:00:00.123Z 192.0.2.7 www.example.com "GET /x HTTP/1.1" 200 5120 10.0.1.11:8080 0.004 0.005
//! ```
//!
//! Fields: time (UTC, when the request arrived), client address, host (`-`
//! when none; as the request named it, also when it was refused as no
//! host), request line (`"-"` for a request the server library could
//! not parse, answered by it with a bare 400, 414 or 431), status, body
//! bytes sent, upstream address and upstream time in seconds (of the last
//! backend tried: with retries, the one that answered, or failed, last;
//! `-` when the proxy answered without one: redirects, 400/431/501/503
//! pages, abandoned requests), total time in seconds (until the last byte
//! of the response was handed to the client).
//! In the host and the request target, anything but visible ASCII is
//! logged as `?` and `"` as `'`: each field stays one word (the request
//! line one quoted string) whatever a client sends.
//! A WebSocket handshake is logged when its 101 is sent (0 bytes, the
//! handshake's times), not when its tunnel ends.
//! A request whose client went away before its response began (an HTTP/2
//! stream reset, a closed connection) is logged with status 499, as by
//! nginx.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const TARGET: &str = "slb::access";

/// What the access log says about one request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub time: SystemTime,
    pub client: IpAddr,
    pub host: Option<String>,
    /// `None` when the request could not be parsed.
    pub request: Option<RequestLine>,
    pub status: u16,
    pub bytes: u64,
    pub upstream: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub total: Duration,
}

/// A request's method, target and version.
#[derive(Debug, Clone)]
pub struct RequestLine {
    pub method: String,
    pub target: String,
    pub version: http::Version,
}

impl Entry {
    pub fn line(&self) -> String {
        let mut s = String::with_capacity(160);
        let _ = write!(
            s,
            "{} {} {} ",
            rfc3339(self.time),
            self.client.to_canonical(),
            // The client's `Host` as it came (a bad one is logged with its
            // 400): its spaces and quotes could otherwise forge fields.
            self.host.as_deref().map_or(Cow::Borrowed("-"), sanitize),
        );
        match &self.request {
            Some(r) => {
                let _ = write!(
                    s,
                    "\"{} {} {:?}\" ",
                    r.method,
                    sanitize(&r.target),
                    r.version
                );
            }
            None => s.push_str("\"-\" "),
        }
        let _ = write!(s, "{} {} ", self.status, self.bytes);
        match self.upstream {
            Some(a) => {
                let _ = write!(s, "{a} ");
            }
            None => s.push_str("- "),
        }
        match self.upstream_time {
            Some(t) => {
                let _ = write!(s, "{:.3} ", t.as_secs_f64());
            }
            None => s.push_str("- "),
        }
        let _ = write!(s, "{:.3}", self.total.as_secs_f64());
        s
    }

    pub fn log(&self) {
        tracing::info!(target: "slb::access", "{}", self.line());
    }
}

/// Keeps a field one word, its line one line and its quotes balanced:
/// anything but visible ASCII becomes `?`, `"` becomes `'`. Borrowed when
/// there is nothing to replace (the usual case).
fn sanitize(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .map(|c| if c == '"' { '\'' } else { c })
            .collect(),
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // leap year
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn formats_a_line() {
        let e = Entry {
            time: UNIX_EPOCH,
            client: "192.0.2.7".parse().unwrap(),
            host: Some("www.example.com".into()),
            request: Some(RequestLine {
                method: "GET".into(),
                target: "/a b\"c".into(),
                version: http::Version::HTTP_11,
            }),
            status: 200,
            bytes: 512,
            upstream: Some("10.0.1.11:8080".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(4)),
            total: Duration::from_millis(5),
        };
        assert_eq!(
            e.line(),
            "1970-01-01T00:00:00.000Z 192.0.2.7 www.example.com \"GET /a?b'c HTTP/1.1\" 200 512 10.0.1.11:8080 0.004 0.005"
        );
        let none = Entry {
            host: None,
            upstream: None,
            upstream_time: None,
            ..e
        };
        assert!(none.line().contains(" - \"GET"));
        assert!(none.line().ends_with(" 512 - - 0.005"));
        let unparsed = Entry {
            request: None,
            status: 400,
            bytes: 0,
            ..none
        };
        assert_eq!(
            unparsed.line(),
            "1970-01-01T00:00:00.000Z 192.0.2.7 - \"-\" 400 0 - - 0.005"
        );
    }
}
