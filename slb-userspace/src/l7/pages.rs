//! The proxy's own responses: small HTML error pages with the status and a
//! fixed sentence, never a backend's details; the https redirect.

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use super::body::{full, Body};

/// What the page says about a status (nothing more specific: the reason
/// stays in the proxy's log).
fn sentence(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be understood.",
        405 => "The request method is not allowed.",
        408 => "The request was not received in time.",
        431 => "The request's header is too large.",
        502 => "The backend server could not be reached or failed to answer.",
        503 => "No backend server is available to handle the request.",
        504 => "The backend server did not answer in time.",
        _ => "The request could not be served.",
    }
}

/// The HTML page for `status`.
pub fn page(status: StatusCode) -> String {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1><p>{}</p><hr><p>slb</p></body></html>\n",
        sentence(status)
    )
}

/// An error response with its page. `close`: tell an HTTP/1 client the
/// connection ends (after a header error the stream may be out of step).
pub fn error(status: StatusCode, close: bool) -> Response<Body> {
    let html = page(status);
    let len = html.len();
    let mut res = Response::new(full(html));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if close {
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// `301 Moved Permanently` to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let Ok(value) = HeaderValue::from_str(location) else {
        // Built from a parsed request; not reachable with valid input.
        return error(StatusCode::BAD_REQUEST, true);
    };
    let mut res = Response::new(full(""));
    *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
    res.headers_mut().insert(LOCATION, value);
    res.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(0));
    res
}

/// The https URL for a request: `https://host[:port]/path?query`; the port
/// is left out when it is 443.
pub fn https_location(host: &str, https_port: u16, path_and_query: &str) -> String {
    // `OPTIONS *` asks about the server, not a resource: its https
    // equivalent is the root.
    let path_and_query = if path_and_query == "*" {
        "/"
    } else {
        path_and_query
    };
    if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_the_status_only() {
        for s in [405u16, 502, 503, 504, 431] {
            let status = StatusCode::from_u16(s).unwrap();
            let p = page(status);
            assert!(p.contains(&format!("<title>{s} ")), "{p}");
            assert!(p.len() < 400);
        }
        let res = error(StatusCode::SERVICE_UNAVAILABLE, false);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    }

    #[test]
    fn https_locations() {
        assert_eq!(
            https_location("a.example", 443, "/x?y=1"),
            "https://a.example/x?y=1"
        );
        assert_eq!(
            https_location("a.example", 8443, "/"),
            "https://a.example:8443/"
        );
        let r = redirect("https://a.example/");
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()[LOCATION], "https://a.example/");
    }
}
