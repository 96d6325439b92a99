//! Tests over whole files: the examples and a file with every optional
//! key.

use std::path::PathBuf;

use super::*;

/// A directory with the PEM files the https example names.
struct Pems(PathBuf);

impl Drop for Pems {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pems() -> Pems {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "slb-config-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, host) in [("www", "www.example.com"), ("api", "api.example.com")] {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    std::fs::copy(dir.join("www.crt"), dir.join("ca.pem")).unwrap();
    Pems(dir)
}

/// The files mutated: the examples, and one with every optional key.
pub(super) const SEEDS: [&str; 4] = [
    include_str!("../../examples/slb.toml"),
    include_str!("../../examples/from-keepalived.toml"),
    include_str!("../l7/example.toml"),
    EVERY_KEY,
];

/// Every optional key of every table at least once, each health-check
/// protocol, byte payloads that are not text, a weight 0 and a backup.
pub(super) const EVERY_KEY: &str = r#"
[agent]
interfaces = ["eth0", "eth1"]
xdp_mode = "skb"
probe_source = ["100.64.0.1", "fd00:64::1"]
local_addresses = ["100.64.0.10", "fd00:64::10"]
pin_path = "/run/slb/bpf"
metrics_listen = "[::1]:9471"
flow_table_size = 65536
maglev_table_size = 1021
control_socket = "/run/slb/c.sock"

[[listener]]
name = "tcp4"
vip = "10.0.0.10"
port = 80
protocol = "tcp"
scheduler = "wrr"
forwarding = "fullnat"
idle_timeout = "1500ms"
persistence = { mode = "source_ip", timeout = "2m" }
acl = { mode = "deny", cidrs = ["10.1.0.0/16", "192.0.2.7", "2001:db8::/32"] }
health_check = { protocol = "http", method = "GET", path = "/h?x=1", host = "h.example.com", port = 8081, codes = ["2xx", "4xx"], interval = "3s", timeout = "7s", healthy_threshold = 2, unhealthy_threshold = 10 }
  [[listener.backend]]
  address = "10.0.1.11"
  port = 8080
  weight = 0
  [[listener.backend]]
  address = "10.0.1.12"
  port = 8080
  weight = 100
  backup = true

[[listener]]
name = "udp6"
vip = "2001:db8:10::53"
port = 53
protocol = "udp"
scheduler = "maglev"
forwarding = "nat"
health_check = { protocol = "udp", payload_hex = "00 ff 1b", expect_hex = "c0ff", port = 5300 }
  [[listener.backend]]
  address = "2001:db8:1::11"
  port = 5353

[[listener]]
name = "udp-text"
vip = "10.0.0.11"
port = 53
protocol = "udp"
scheduler = "sh"
forwarding = "dr"
acl = { mode = "allow", cidrs = ["0.0.0.0/0"] }
health_check = { protocol = "udp", payload = "ping", expect = "pong" }
  [[listener.backend]]
  address = "10.0.2.11"
  port = 53

[[listener]]
name = "http"
vip = "10.0.0.12"
port = 8080
protocol = "http"
scheduler = "wlc"
persistence = { mode = "rewrite_cookie", cookie = "JSESSIONID" }
gzip = true
backend_connect_timeout = "250ms"
backend_response_timeout = "2m"
client_idle_timeout = "30s"
request_header_timeout = "10s"
max_requests_per_connection = 1000
max_header_size = 32768
idle_timeout = "120s"
health_check = { enabled = false }
  [[listener.rule]]
  host = "*.Example.com"
  path = "/api/"
  group = "api"
  [[listener.rule]]
  host = "[2001:db8::10]"
  group = "default"
  [[listener.group]]
  name = "api"
    [[listener.group.backend]]
    address = "10.0.5.1"
    port = 9000
    weight = 0
    backup = true
  [[listener.backend]]
  address = "2001:db8:3::32"
  port = 8080

[[listener]]
name = "https"
vip = "10.0.0.12"
port = 443
protocol = "https"
scheduler = "hash"
hash_key = { header = "X-User" }
persistence = { mode = "insert_cookie", cookie = "LB", timeout = "60m" }
client_ca = "ca.pem"
health_check = { protocol = "tcp", port = 8443 }
  [[listener.certificate]]
  cert = "www.crt"
  key = "www.key"
  [[listener.backend]]
  address = "10.0.6.1"
  port = 8443
"#;

#[test]
fn the_file_with_every_key_is_valid() {
    let pems = pems();
    if let Err(e) = parse_in(EVERY_KEY, &pems.0) {
        panic!("{e}");
    }
}

/// JSON as TOML: `null` (an absent optional value) is left out, as it
/// would be in a file.
fn json_to_toml(v: &serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(a.iter().filter_map(json_to_toml).collect()),
        J::Object(o) => toml::Value::Table(
            o.iter()
                .filter_map(|(k, x)| Some((k.clone(), json_to_toml(x)?)))
                .collect(),
        ),
    })
}

/// `slb validate --print` shows a file: its JSON, written as TOML, is
/// read back to the same configuration, for every example and for a file
/// that gives every optional key.
#[test]
fn printed_configuration_reads_back_the_same() {
    let pems = pems();
    for (i, text) in SEEDS.iter().enumerate() {
        let cfg = parse_in(text, &pems.0).unwrap_or_else(|e| panic!("seed file {i}: {e}"));
        let json = effective_json(&cfg).unwrap();
        let Some(toml::Value::Table(doc)) = json_to_toml(&json) else {
            panic!("seed file {i}: not a table: {json}")
        };
        let printed = toml::to_string(&doc).unwrap();
        let again = parse_in(&printed, &pems.0).unwrap_or_else(|e| {
            panic!("seed file {i}: the printed file is invalid:\n{e}\n{printed}")
        });
        assert_eq!(again, cfg, "seed file {i}, printed as:\n{printed}");
    }
}
