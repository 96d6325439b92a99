//! Mutation tests of the configuration reader: valid files with keys
//! deleted, values of other types or extreme values put in, tables
//! duplicated, text cut or repeated. Whatever the file, `parse` must not
//! panic, and every error must name a key path (or be a TOML syntax error
//! with its line).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use super::*;

/// xorshift64*: a small seeded generator (proptest is not a dependency),
/// so that a failure is reproduced by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
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

/// Values put in place of others.
fn odd_value(rng: &mut Rng) -> toml::Value {
    use toml::Value as V;
    let strings = [
        "",
        " ",
        "é🦀\u{202e}x",
        "\u{0}",
        "a\nb",
        "::ffff:10.0.0.1",
        "::ffff:10.0.0.0/104",
        "fe80::1%eth0",
        "fe80::1",
        "10.0.0.1/8",
        "10.0.0.0/8",
        "10.0.0.0/33",
        "10.0.0.10",
        "10.0.1.11",
        "100.64.0.1",
        "2001:db8::1",
        "255.255.255.255",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "127.0.0.1",
        "0s",
        "1.5s",
        "100000h",
        "1e3s",
        "-1s",
        "18446744073709551615ms",
        "99999999999999999999999s",
        "1m",
        "tcp",
        "udp",
        "http",
        "https",
        "maglev",
        "hash",
        "wrr",
        "dr",
        "allow",
        "source_ip",
        "insert_cookie",
        "rewrite_cookie",
        "default",
        "/nonexistent/cert.pem",
        "/",
        "relative/path",
        "[::1]:0",
        "1.2.3.4:99999",
        "zz",
        "0",
        "*.",
        "*",
        "2xx",
        "6xx",
    ];
    match rng.below(9) {
        0..=2 => V::String(strings[rng.below(strings.len())].to_owned()),
        3 => V::String("x".repeat(1 + rng.below(100_000))),
        4 => V::Integer(
            [
                -1,
                0,
                1,
                2,
                100,
                101,
                1021,
                65_535,
                65_536,
                i64::from(u32::MAX) + 1,
                i64::MAX,
                i64::MIN,
            ][rng.below(12)],
        ),
        5 => V::Float([1.5, f64::NAN, f64::INFINITY, -0.0][rng.below(4)]),
        6 => V::Boolean(rng.below(2) == 0),
        7 => V::Array(match rng.below(4) {
            0 => vec![],
            1 => vec![V::String("x".into())],
            2 => vec![V::Integer(1), V::String("a".into())],
            _ => vec![V::Array(vec![])],
        }),
        _ => match rng.below(3) {
            0 => V::Table(toml::Table::new()),
            1 => V::Datetime("1979-05-27T07:32:00Z".parse().unwrap()),
            _ => {
                let mut t = toml::Table::new();
                t.insert("mode".into(), V::String("allow".into()));
                V::Table(t)
            }
        },
    }
}

/// The paths of every value in `v` (keys and array indexes).
fn slots(v: &toml::Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                at.push(Step::Key(k.clone()));
                out.push(at.clone());
                slots(x, at, out);
                at.pop();
            }
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(Step::Index(i));
                out.push(at.clone());
                slots(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// The value that holds the last step of `path`.
fn parent<'a>(root: &'a mut toml::Value, path: &[Step]) -> Option<&'a mut toml::Value> {
    let mut v = root;
    for s in &path[..path.len() - 1] {
        v = match s {
            Step::Key(k) => v.as_table_mut()?.get_mut(k)?,
            Step::Index(i) => v.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(v)
}

/// Applies one mutation to the document.
fn mutate(doc: &mut toml::Value, rng: &mut Rng) {
    let mut all = Vec::new();
    slots(doc, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return;
    }
    let path = all[rng.below(all.len())].clone();
    let op = rng.below(5);
    // A value from elsewhere in the document (a table where a string
    // belongs, a listener's address as a backend's, ...).
    let elsewhere = {
        let other = &all[rng.below(all.len())];
        parent(&mut doc.clone(), other).and_then(|p| match other.last() {
            Some(Step::Key(k)) => p.get(k.as_str()).cloned(),
            Some(Step::Index(i)) => p.get(*i).cloned(),
            None => None,
        })
    };
    let Some(p) = parent(doc, &path) else { return };
    let last = path.last().cloned();
    match (p, last) {
        (toml::Value::Table(t), Some(Step::Key(k))) => match op {
            0 => {
                t.remove(&k);
            }
            1 => {
                let misspelt = format!("{}{}", &k[..k.len().saturating_sub(1)], "_");
                t.insert(misspelt, odd_value(rng));
            }
            2 => {
                if let Some(v) = elsewhere {
                    t.insert(k, v);
                }
            }
            _ => {
                t.insert(k, odd_value(rng));
            }
        },
        (toml::Value::Array(a), Some(Step::Index(i))) => match op {
            0 => {
                a.remove(i);
            }
            // A listener, backend, group... twice.
            1 | 2 => {
                let copy = a[i].clone();
                a.insert(i, copy);
            }
            _ => a[i] = odd_value(rng),
        },
        _ => {}
    }
}

/// A mutation of the text itself (what a value tree cannot express:
/// duplicate tables or keys, a cut file).
fn mutate_text(text: &str, rng: &mut Rng) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = rng.below(lines.len());
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    match rng.below(4) {
        0 => out.insert(i, lines[i].to_owned()),
        1 => out.truncate(i),
        2 => out.insert(i, "[agent]".to_owned()),
        _ => out[i] = format!("{} # é🦀", lines[i]),
    }
    out.join("\n")
}

/// `listener[1].backend[0].weight`, `agent.probe_source[0]`, `listener`.
fn is_key_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('.').all(|seg| {
            let (name, rest) = seg.split_at(seg.find('[').unwrap_or(seg.len()));
            let name_ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let mut idx = rest;
            while let Some(r) = idx.strip_prefix('[') {
                let Some(end) = r.find(']') else { return false };
                if end == 0 || !r[..end].chars().all(|c| c.is_ascii_digit()) {
                    return false;
                }
                idx = &r[end + 1..];
            }
            name_ok && idx.is_empty()
        })
}

/// Parses `text`; panics (with the seed and the file) on a panic of the
/// parser or an error without a key path.
fn check(text: &str, dir: &Path, seed: u64) {
    let result = catch_unwind(AssertUnwindSafe(|| parse_in(text, dir)));
    let result = match result {
        Ok(r) => r,
        Err(_) => panic!("seed {seed}: parse panicked on:\n{text}"),
    };
    let Err(errors) = result else { return };
    assert!(!errors.is_empty(), "seed {seed}: no error in an Err");
    for e in &errors {
        assert!(!e.message.trim().is_empty(), "seed {seed}: empty message");
        // A syntax error belongs to no key (its line is given when the
        // parser knows it: not for nesting beyond its recursion limit).
        let syntax = e.path.is_empty() && e.message.starts_with("invalid TOML: ");
        assert!(
            syntax || is_key_path(&e.path),
            "seed {seed}: error without a key path: {e:?}\nfile:\n{text}"
        );
        assert!(
            !e.message.contains("internal error"),
            "seed {seed}: {e}\nfile:\n{text}"
        );
    }
}

#[test]
fn mutated_files_never_panic_and_every_error_names_its_key() {
    let pems = super::l7_tests::files();
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let base = SEEDS[rng.below(SEEDS.len())];
        let text = if rng.below(4) == 0 {
            mutate_text(base, &mut rng)
        } else {
            let mut doc = toml::Value::Table(base.parse::<toml::Table>().unwrap());
            for _ in 0..1 + rng.below(3) {
                mutate(&mut doc, &mut rng);
            }
            match toml::to_string(&doc) {
                Ok(t) => t,
                Err(_) => continue,
            }
        };
        check(&text, &pems.dir, seed);
    }
    // Nesting deep enough to exhaust a recursive reader's stack.
    let deep = 100_000;
    let arrays = format!(
        "[agent]\ninterfaces = {}{}",
        "[".repeat(deep),
        "]".repeat(deep)
    );
    check(&arrays, &pems.dir, 0);
    let tables = format!(
        "[agent]\ninterfaces = {}1{}",
        "{ a = ".repeat(deep),
        " }".repeat(deep)
    );
    check(&tables, &pems.dir, 0);
    let dotted = format!("[{}]\n", vec!["a"; deep].join("."));
    check(&dotted, &pems.dir, 0);
}

#[test]
fn the_file_with_every_key_is_valid() {
    let pems = super::l7_tests::files();
    if let Err(e) = parse_in(EVERY_KEY, &pems.dir) {
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
    let pems = super::l7_tests::files();
    for (i, text) in SEEDS.iter().enumerate() {
        let cfg = parse_in(text, &pems.dir).unwrap_or_else(|e| panic!("seed file {i}: {e}"));
        let json = effective_json(&cfg).unwrap();
        let Some(toml::Value::Table(doc)) = json_to_toml(&json) else {
            panic!("seed file {i}: not a table: {json}")
        };
        let printed = toml::to_string(&doc).unwrap();
        let again = parse_in(&printed, &pems.dir).unwrap_or_else(|e| {
            panic!("seed file {i}: the printed file is invalid:\n{e}\n{printed}")
        });
        assert_eq!(again, cfg, "seed file {i}, printed as:\n{printed}");
    }
}
