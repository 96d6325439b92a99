//! L7 counters for `/metrics`: requests by listener and status class, the
//! upstream latency (until the backend's response header) by listener,
//! connections the listener's ACL refused, and TLS handshakes that failed
//! or timed out.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    /// "1xx" .. "5xx".
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

type LatencyFamily = Family<ListenerLabels, Histogram, fn() -> Histogram>;

/// 1 ms .. about 65 s in powers of two.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The proxy's metrics. Clones share the same series.
#[derive(Clone, Debug)]
pub struct L7Metrics {
    requests: Family<RequestLabels, Counter>,
    upstream_latency: LatencyFamily,
    acl_refused: Family<ListenerLabels, Counter>,
    tls_failed: Family<ListenerLabels, Counter>,
}

impl Default for L7Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            acl_refused: Family::default(),
            tls_failed: Family::default(),
        }
    }
}

impl L7Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the series to `registry` (names `slb_l7_requests_total`,
    /// `slb_l7_upstream_latency_seconds`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "slb_l7_requests",
            "HTTP requests answered by the L7 proxy, by listener and status class",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "slb_l7_upstream_latency",
            "Time from sending a request to a backend until its response header",
            Unit::Seconds,
            self.upstream_latency.clone(),
        );
        registry.register(
            "slb_l7_acl_refused_connections",
            "Client connections the listener's ACL refused",
            self.acl_refused.clone(),
        );
        registry.register(
            "slb_l7_tls_handshake_failures",
            "Client connections whose TLS handshake failed or timed out",
            self.tls_failed.clone(),
        );
    }

    /// Connections `listener`'s ACL refused, for tests and status output.
    pub fn acl_refused_of(&self, listener: &str) -> u64 {
        self.acl_refused
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .get()
    }

    /// Counts a request answered with `status`.
    pub fn request(&self, listener: &str, status: u16) {
        let class = format!("{}xx", (status / 100).clamp(1, 5));
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.to_owned(),
                class,
            })
            .inc();
    }

    /// Records an upstream response time.
    pub fn upstream_latency(&self, listener: &str, elapsed: std::time::Duration) {
        self.upstream_latency
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The series of one listener, resolved once (on first use each, so
    /// that a series appears in `/metrics` only once it counted something,
    /// as with [`L7Metrics::request`]).
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics(Arc::new(ListenerSeries {
            metrics: self.clone(),
            listener: listener.to_owned(),
            classes: Default::default(),
            latency: OnceLock::new(),
        }))
    }

    /// Requests of `listener` counted in `class` ("2xx"...), for tests and
    /// status output.
    pub fn requests_in_class(&self, listener: &str, class: &str) -> u64 {
        self.requests
            .get_or_create(&RequestLabels {
                listener: listener.to_owned(),
                class: class.to_owned(),
            })
            .get()
    }
}

impl L7Metrics {
    /// TLS handshakes of `listener` that failed, for tests.
    pub fn tls_failures_of(&self, listener: &str) -> u64 {
        self.tls_failed
            .get(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// What `slb status` shows for `listener`: requests per status class
    /// ("1xx".."5xx"), refused connections and failed TLS handshakes. Reads without creating a
    /// series, so a status request does not change what `/metrics` lists.
    pub fn counts(&self, listener: &str) -> crate::status::RequestCounts {
        let class = |class: &str| {
            self.requests
                .get(&RequestLabels {
                    listener: listener.to_owned(),
                    class: class.to_owned(),
                })
                .map_or(0, |c| c.get())
        };
        let acl_refused = self
            .acl_refused
            .get(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .map_or(0, |c| c.get());
        let tls_failed = self.tls_failures_of(listener);
        crate::status::RequestCounts {
            class_1xx: class("1xx"),
            class_2xx: class("2xx"),
            class_3xx: class("3xx"),
            class_4xx: class("4xx"),
            class_5xx: class("5xx"),
            acl_refused,
            tls_failed,
        }
    }
}

/// The series of one listener (see [`L7Metrics::listener`]); clones share
/// them.
#[derive(Clone, Debug)]
pub struct ListenerMetrics(Arc<ListenerSeries>);

#[derive(Debug)]
struct ListenerSeries {
    metrics: L7Metrics,
    listener: String,
    /// "1xx" .. "5xx".
    classes: [OnceLock<Counter>; 5],
    latency: OnceLock<Histogram>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl ListenerMetrics {
    /// Counts a request answered with `status`.
    pub fn request(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        let s = &self.0;
        s.classes[class]
            .get_or_init(|| {
                s.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        listener: s.listener.clone(),
                        class: CLASSES[class].to_owned(),
                    })
                    .clone()
            })
            .inc();
    }

    /// Counts a connection the ACL refused (rare: resolved each time).
    pub fn acl_refused(&self) {
        let s = &self.0;
        s.metrics
            .acl_refused
            .get_or_create(&ListenerLabels {
                listener: s.listener.clone(),
            })
            .inc();
    }

    /// Counts a TLS handshake that failed or timed out (a scanner, a
    /// client refusing the certificate, a missing client certificate):
    /// rare, resolved each time.
    pub fn tls_failed(&self) {
        let s = &self.0;
        s.metrics
            .tls_failed
            .get_or_create(&ListenerLabels {
                listener: s.listener.clone(),
            })
            .inc();
    }

    /// Records an upstream response time.
    pub fn upstream_latency(&self, elapsed: std::time::Duration) {
        let s = &self.0;
        s.latency
            .get_or_init(|| {
                s.metrics
                    .upstream_latency
                    .get_or_create(&ListenerLabels {
                        listener: s.listener.clone(),
                    })
                    .clone()
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_series() {
        let m = L7Metrics::new();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.request("web", 200);
        m.request("web", 204);
        m.request("web", 503);
        m.upstream_latency("web", std::time::Duration::from_millis(3));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains("slb_l7_requests_total{listener=\"web\",class=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("slb_l7_requests_total{listener=\"web\",class=\"5xx\"} 1"));
        assert!(text.contains("slb_l7_upstream_latency_seconds_count{listener=\"web\"} 1"));
        assert_eq!(m.requests_in_class("web", "2xx"), 2);
    }

    #[test]
    fn listener_handles_share_the_series() {
        let m = L7Metrics::new();
        let mut reg = Registry::default();
        m.register(&mut reg);
        let web = m.listener("web");
        web.request(200);
        web.clone().request(204);
        m.request("web", 201);
        web.request(404);
        web.upstream_latency(std::time::Duration::from_millis(3));
        assert_eq!(m.requests_in_class("web", "2xx"), 3);
        assert_eq!(m.requests_in_class("web", "4xx"), 1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            !text.contains("class=\"3xx\""),
            "unused series appear: {text}"
        );
        assert!(text.contains("slb_l7_upstream_latency_seconds_count{listener=\"web\"} 1"));
    }
}
