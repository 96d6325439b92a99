//! Unit tests of the configuration module.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use slb_common::limits::MAX_ACL_ENTRIES;

/// An agent table that satisfies the cross-listener rules for IPv4 listeners.
const AGENT: &str = r#"
[agent]
interfaces = ["eth0"]
probe_source = "100.64.0.1"
local_addresses = ["100.64.0.10"]
"#;

/// A minimal valid tcp listener; `extra` is added to its table.
fn listener(extra: &str) -> String {
    listener_at("web", "10.0.0.10", 80, extra)
}

/// A tcp listener with one backend 10.0.1.11:8080; `extra` is added to its table.
fn listener_at(name: &str, vip: &str, port: i64, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "{name}"
vip = "{vip}"
port = {port}
{extra}

  [[listener.backend]]
  address = "10.0.1.11"
  port = 8080
"#
    )
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that exactly one error is reported, at `path`, containing `msg`.
/// Shared with the http/https key tests.
#[track_caller]
pub(super) fn one_error(text: &str, path: &str, msg: &str) {
    let errs = match parse(text) {
        Ok(c) => panic!("expected an error at {path}, got {c:#?}"),
        Err(e) => e,
    };
    assert_eq!(errs.len(), 1, "expected one error, got:\n{errs}");
    let e = &errs.errors[0];
    assert_eq!(e.path, path, "wrong path in: {e}");
    assert!(
        e.message.contains(msg),
        "message {:?} lacks {msg:?}",
        e.message
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------- valid files

#[test]
fn example_file_parses() {
    let c = ok(include_str!("../../examples/slb.toml"));
    assert_eq!(c.listeners.len(), 4);
    assert!(c.require_dataplane().is_ok());
    let api = c.listener("api").map(|l| l.health_check.clone());
    let Some(Some(hc)) = api else {
        panic!("api has no health check")
    };
    assert_eq!(hc.port, Some(8081));
    let Probe::Http(http) = hc.probe else {
        panic!("not an http check")
    };
    assert_eq!(http.method, HttpMethod::Get);
    assert_eq!(http.path, "/healthz?full=1");
    assert_eq!(http.codes, vec![StatusClass::S2xx]);
}

/// The keepalived translation in the examples means what its comments say.
#[test]
fn keepalived_example_parses() {
    let c = ok(include_str!("../../examples/from-keepalived.toml"));
    let l = &c.listeners[0];
    assert_eq!(l.scheduler, Scheduler::Wlc);
    assert_eq!(l.forwarding, Some(Forwarding::Dr));
    assert_eq!(l.persistence.as_ref().map(|p| p.timeout), Some(secs(300)));
    let weights: Vec<(u32, bool)> = l.backends.iter().map(|b| (b.weight, b.backup)).collect();
    assert_eq!(weights, [(3, false), (1, false), (100, true)]);
    let Some(hc) = &l.health_check else {
        panic!("no health check")
    };
    assert_eq!(hc.interval, secs(6));
    let Probe::Http(http) = &hc.probe else {
        panic!("not an http check")
    };
    assert_eq!(
        (http.method, http.path.as_str()),
        (HttpMethod::Get, "/health")
    );
}

#[test]
fn spec_example_parses() {
    let text = r#"
[agent]
interfaces    = ["eth0"]
xdp_mode      = "auto"
probe_source  = "100.64.0.1"
local_addresses = ["100.64.0.10", "100.64.0.11"]
pin_path      = "/sys/fs/bpf/slb"
metrics_listen = "127.0.0.1:9470"
flow_table_size = 1048576
maglev_table_size = 65537
control_socket = "/run/slb/control.sock"

[[listener]]
name        = "web"
vip         = "10.0.0.10"
port        = 80
protocol    = "tcp"
scheduler   = "wrr"
forwarding  = "fullnat"
idle_timeout = "900s"
persistence = { mode = "source_ip", timeout = "1000s" }
acl = { mode = "allow", cidrs = ["10.1.0.0/16"] }
# SPEC §2 breaks this inline table over two lines, which is TOML 1.1;
# the toml crate in use (0.8) reads TOML 1.0, where it must be one line.
health_check = { protocol = "tcp", interval = "2s", timeout = "5s", healthy_threshold = 3, unhealthy_threshold = 3 }

  [[listener.backend]]
  address = "10.0.1.11"
  port    = 8080
  weight  = 100
"#;
    let c = ok(text);
    let l = &c.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.vip, "10.0.0.10".parse::<IpAddr>().unwrap());
    assert_eq!(
        l.persistence,
        Some(Persistence {
            mode: PersistenceMode::SourceIp,
            timeout: secs(1000)
        })
    );
    assert_eq!(
        l.acl,
        Some(Acl {
            mode: AclMode::Allow,
            cidrs: vec!["10.1.0.0/16".parse().unwrap()]
        })
    );
    assert_eq!(c.agent.local_addresses.len(), 2);
    // Everything the example states is the default: dropping those keys
    // gives the same config.
    let minimal = r#"
[agent]
interfaces    = ["eth0"]
probe_source  = "100.64.0.1"
local_addresses = ["100.64.0.10", "100.64.0.11"]

[[listener]]
name        = "web"
vip         = "10.0.0.10"
port        = 80
persistence = { mode = "source_ip" }
acl = { mode = "allow", cidrs = ["10.1.0.0/16"] }

  [[listener.backend]]
  address = "10.0.1.11"
  port    = 8080
"#;
    assert_eq!(ok(minimal), c);
}

#[test]
fn defaults_applied() {
    let c = ok(&format!("{AGENT}{}", listener("")));
    let a = &c.agent;
    assert_eq!(a.xdp_mode, XdpMode::Auto);
    assert_eq!(a.pin_path.to_str(), Some("/sys/fs/bpf/slb"));
    assert_eq!(a.metrics_listen.to_string(), "127.0.0.1:9470");
    assert_eq!(a.flow_table_size, 1_048_576);
    assert_eq!(a.maglev_table_size, 65_537);
    assert_eq!(a.control_socket.to_str(), Some("/run/slb/control.sock"));

    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Tcp);
    assert_eq!(l.scheduler, Scheduler::Wrr);
    assert_eq!(l.forwarding, Some(Forwarding::FullNat));
    assert_eq!(l.idle_timeout, secs(900));
    assert_eq!(l.persistence, None);
    assert_eq!(l.acl, None);
    assert_eq!(
        l.health_check,
        Some(HealthCheck {
            interval: secs(2),
            timeout: secs(5),
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            port: None,
            probe: Probe::Tcp,
        })
    );
    assert_eq!(l.backends[0].weight, 100);
}

#[test]
fn empty_file_is_valid_but_has_no_dataplane() {
    let c = ok("");
    assert!(c.listeners.is_empty());
    assert!(c.agent.probe_source.is_empty());
    let e = c.require_dataplane().unwrap_err();
    assert_eq!(e.errors[0].path, "agent.interfaces");
}

#[test]
fn defaults_depend_on_protocol() {
    let udp = ok(&format!("{AGENT}{}", listener("protocol = \"udp\"")));
    let l = &udp.listeners[0];
    assert_eq!(l.idle_timeout, secs(90));
    let Some(hc) = &l.health_check else {
        panic!("no check")
    };
    assert_eq!(
        hc.probe,
        Probe::Udp(UdpProbe {
            payload: "slb-probe".into(),
            expect: None
        })
    );

    for proto in ["http", "https"] {
        let c = ok(&format!(
            "{AGENT}{}",
            listener(&format!("protocol = \"{proto}\""))
        ));
        let l = &c.listeners[0];
        assert_eq!(l.idle_timeout, secs(60));
        assert_eq!(l.forwarding, None);
        let Some(hc) = &l.health_check else {
            panic!("no check")
        };
        assert_eq!(
            hc.probe,
            Probe::Http(HttpProbe {
                method: HttpMethod::Head,
                path: "/".into(),
                host: None,
                codes: vec![StatusClass::S2xx, StatusClass::S3xx],
            })
        );
    }

    let persist = ok(&format!(
        "{AGENT}{}",
        listener("persistence = { mode = \"source_ip\" }")
    ));
    assert_eq!(
        persist.listeners[0].persistence.as_ref().map(|p| p.timeout),
        Some(secs(1000))
    );
}

#[test]
fn http_checks_may_be_turned_off() {
    let c = ok(&format!(
        "{AGENT}{}",
        listener("protocol = \"https\"\nhealth_check = { enabled = false }")
    ));
    assert_eq!(c.listeners[0].health_check, None);
    // With no check anywhere, probe_source is not needed.
    let c = ok(&listener(
        "protocol = \"http\"\nhealth_check = { enabled = false }",
    ));
    assert!(c.agent.probe_source.is_empty());
}

#[test]
fn http_listener_may_mix_families_and_needs_no_pool() {
    let text = r#"
[agent]
probe_source = ["100.64.0.1", "fd00:64::1"]

[[listener]]
name = "api"
vip = "10.0.0.10"
port = 443
protocol = "https"

  [[listener.backend]]
  address = "2001:db8::1"
  port = 8443

  [[listener.backend]]
  address = "10.0.1.1"
  port = 8443
"#;
    let c = ok(text);
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        c.agent.probe_source_for(v6),
        Some("fd00:64::1".parse().unwrap())
    );
    assert_eq!(c.l7_listeners().count(), 1);
    assert_eq!(c.l4_listeners().count(), 0);
}

#[test]
fn acl_refuses_ipv4_mapped_prefixes() {
    one_error(
        &format!(
            "{AGENT}{}",
            listener("acl = { mode = \"deny\", cidrs = [\"::ffff:10.0.0.0/104\"] }")
        ),
        "listener[0].acl.cidrs[0]",
        "write it as 10.0.0.0/8",
    );
}

#[test]
fn acl_accepts_mixed_families_and_bare_addresses() {
    let c = ok(&format!(
        "{AGENT}{}",
        listener("acl = { mode = \"deny\", cidrs = [\"192.0.2.0/24\", \"2001:db8::/32\", \"198.51.100.7\", \"::1\"] }")
    ));
    let acl = c.listeners[0].acl.clone().unwrap();
    assert_eq!(acl.mode, AclMode::Deny);
    let shown: Vec<String> = acl.cidrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "192.0.2.0/24",
            "2001:db8::/32",
            "198.51.100.7/32",
            "::1/128"
        ]
    );
}

/// Only the prefixes of the VIP's family can match its clients: an
/// allow-list with none of them refused every client, silently.
#[test]
fn acl_allow_list_needs_a_prefix_of_the_vip_family() {
    for proto in ["tcp", "http"] {
        one_error(
            &format!(
                "{AGENT}{}",
                listener(&format!(
                    "protocol = \"{proto}\"\nacl = {{ mode = \"allow\", cidrs = [\"2001:db8::/32\"] }}"
                ))
            ),
            "listener[0].acl.cidrs",
            "no IPv4 prefix: this allow-list would refuse every client of the IPv4 vip 10.0.0.10",
        );
    }
    // A deny-list of the other family denies nobody: harmless.
    ok(&format!(
        "{AGENT}{}",
        listener("acl = { mode = \"deny\", cidrs = [\"2001:db8::/32\"] }")
    ));
}

#[test]
fn effective_config_serializes_as_file_keys() {
    let c = ok(&format!(
        "{AGENT}{}",
        listener("protocol = \"udp\"\nidle_timeout = \"1500ms\"")
    ));
    let json = serde_json::to_value(&c).unwrap();
    let l = &json["listener"][0];
    assert_eq!(l["idle_timeout"], "1500ms");
    assert_eq!(l["protocol"], "udp");
    assert_eq!(l["forwarding"], "fullnat");
    assert_eq!(l["health_check"]["protocol"], "udp");
    assert_eq!(l["health_check"]["interval"], "2s");
    assert_eq!(l["health_check"]["payload"], "slb-probe");
    assert_eq!(l["backend"][0]["address"], "10.0.1.11");
    assert_eq!(json["agent"]["probe_source"][0], "100.64.0.1");
}

/// `port` is a key of every check protocol, not of http checks only.
#[test]
fn every_check_may_name_its_port() {
    for (proto, hc) in [("tcp", "tcp"), ("udp", "udp"), ("http", "http")] {
        let c = ok(&format!(
            "{AGENT}{}",
            listener(&format!(
                "protocol = \"{proto}\"\nhealth_check = {{ protocol = \"{hc}\", port = 9000 }}"
            ))
        ));
        let check = c.listeners[0].health_check.as_ref().unwrap();
        assert_eq!(check.port, Some(9000), "{proto}");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["listener"][0]["health_check"]["port"], 9000, "{proto}");
    }
    one_error(
        &format!(
            "{AGENT}{}",
            listener("health_check = { protocol = \"tcp\", port = 0 }")
        ),
        "listener[0].health_check.port",
        "",
    );
}

/// Bytes that are not UTF-8 text print as hex, under the key that takes
/// them; text prints as text, however it was given.
#[test]
fn udp_check_bytes_print_as_they_could_be_written() {
    let c = ok(&format!(
        "{AGENT}{}",
        listener(
            "protocol = \"udp\"\nhealth_check = { protocol = \"udp\", \
             payload_hex = \"1B 80 00\", expect_hex = \"6f6b\" }"
        )
    ));
    let json = serde_json::to_value(&c).unwrap();
    let hc = &json["listener"][0]["health_check"];
    assert_eq!(hc["payload_hex"], "1b8000");
    assert_eq!(hc["expect"], "ok");
    assert!(
        hc.get("payload").is_none() && hc.get("expect_hex").is_none(),
        "{hc}"
    );
}

// ------------------------------------------------------------------ durations

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("900s"), Ok(secs(900)));
    assert_eq!(parse_duration("2m"), Ok(secs(120)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(format_duration(secs(900)), "900s");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

#[test]
fn durations_reject_bad_text() {
    for bad in [
        "5", "5h", "-1s", "+5s", "1.5s", "", "s", " 5s", "5 s", "5S", "5sec", "ms5",
    ] {
        let err = parse_duration(bad).unwrap_err();
        assert!(err.contains("unit ms, s or m"), "{bad:?}: {err}");
    }
    for big in [
        "99999999999999999999999s",
        "18446744073709551615m",
        "18446744073709551615s",
    ] {
        let err = parse_duration(big).unwrap_err();
        assert!(err.contains("too large"), "{big:?}: {err}");
    }
}

#[test]
fn duration_errors_name_the_key() {
    one_error(
        &format!("{AGENT}{}", listener("idle_timeout = 5")),
        "listener[0].idle_timeout",
        "with a unit ms, s or m, e.g. \"5s\" (got the bare number 5)",
    );
    one_error(
        &format!("{AGENT}{}", listener("idle_timeout = \"5h\"")),
        "listener[0].idle_timeout",
        "(got \"5h\")",
    );
    one_error(
        &format!(
            "{AGENT}{}",
            listener("health_check = { interval = \"-1s\" }")
        ),
        "listener[0].health_check.interval",
        "unit ms, s or m",
    );
    one_error(
        &format!(
            "{AGENT}{}",
            listener("persistence = { mode = \"source_ip\", timeout = \"99999999999999999999m\" }")
        ),
        "listener[0].persistence.timeout",
        "too large",
    );
    one_error(
        &format!(
            "{AGENT}{}",
            listener("health_check = { interval = \"51s\" }")
        ),
        "listener[0].health_check.interval",
        "must be 1s..=50s (got \"51s\")",
    );
    one_error(
        &format!(
            "{AGENT}{}",
            listener("health_check = { timeout = \"500ms\" }")
        ),
        "listener[0].health_check.timeout",
        "must be 1s..=300s",
    );
    one_error(
        &format!("{AGENT}{}", listener("idle_timeout = \"0s\"")),
        "listener[0].idle_timeout",
        "must be 1s..=86400s",
    );
}

// ---------------------------------------------------------- structural errors

#[test]
fn unknown_key_deep_inside_has_its_path() {
    let text = format!(
        "{AGENT}{}\n  [[listener.backend]]\n  address = \"10.0.1.12\"\n  port = 8080\n  wieght = 5\n",
        listener("")
    );
    one_error(
        &text,
        "listener[0].backend[1].wieght",
        "unknown field `wieght`",
    );
    one_error(
        &format!(
            "{AGENT}{}",
            listener("health_check = { protocol = \"tcp\", bogus = 1 }")
        ),
        "listener[0].health_check.bogus",
        "unknown field `bogus`",
    );
    one_error("[agent]\nfoo = 1\n", "agent.foo", "unknown field `foo`");
    one_error(
        "[[listeners]]\nname = \"x\"\n",
        "listeners",
        "unknown field `listeners`",
    );
    one_error(
        &format!(
            "{AGENT}{}",
            listener("persistence = { mode = \"source_ip\", cookie = \"x\" }")
        ),
        "listener[0].persistence.cookie",
        "unknown field",
    );
}

#[test]
fn wrong_toml_type_has_its_path() {
    // Only the type is reported: not also "is required" for the key that
    // was set aside.
    let text = format!(
        "{AGENT}{}",
        listener("").replacen("port = 80", "port = \"80\"", 1)
    );
    one_error(
        &text,
        "listener[0].port",
        "invalid type: string \"80\", expected an integer (line 10, column 8)",
    );
    one_error(
        "[agent]\nprobe_source = [1]\n",
        "agent.probe_source[0]",
        "invalid type",
    );
    one_error(
        "[agent]\ninterfaces = \"eth0\"\n",
        "agent.interfaces",
        "invalid type",
    );
}

/// Wrong types are told in TOML's words: a table, an array, a date-time,
/// not the reader's Rust types (`struct RawHealthCheck`, `sequence`,
/// `map`), and a date-time where a table belongs is not an "unknown
/// field `$__toml_private_datetime`" inside it.
#[test]
fn wrong_toml_types_are_named_as_toml_names_them() {
    let with = |extra: &str| format!("{AGENT}{}", listener(extra));
    one_error(
        &with("health_check = \"tcp\""),
        "listener[0].health_check",
        "invalid type: string \"tcp\", expected a table (line",
    );
    one_error(
        &with("health_check = 2024-01-01T00:00:00Z"),
        "listener[0].health_check",
        "invalid type: date-time, expected a table (line",
    );
    one_error(
        &with("idle_timeout = 07:30:00"),
        "listener[0].idle_timeout",
        "invalid type: date-time, expected a duration string",
    );
    one_error(
        "[agent]\npin_path = { dir = \"/x\" }\n",
        "agent.pin_path",
        "invalid type: table, expected a string (line",
    );
    one_error(
        "[agent]\nflow_table_size = [1]\n",
        "agent.flow_table_size",
        "invalid type: array, expected an integer (line",
    );
    one_error(
        "listener = 1979-05-27\n",
        "listener",
        "invalid type: date-time, expected an array (line",
    );
}

/// A misspelt key or keyword comes with the one it most likely stands for.
#[test]
fn misspellings_get_a_suggestion() {
    let with = |extra: &str| format!("{AGENT}{}", listener(extra));
    one_error(
        &with("helth_check = { protocol = \"tcp\" }"),
        "listener[0].helth_check",
        "unknown field `helth_check` (did you mean `health_check`?), expected one of `name`",
    );
    one_error(
        &format!("{AGENT}flow_tabel_size = 2048\n"),
        "agent.flow_tabel_size",
        "(did you mean `flow_table_size`?)",
    );
    one_error(
        &with("scheduler = \"maglv\""),
        "listener[0].scheduler",
        "must be one of \"wrr\", \"wlc\", \"maglev\", \"sh\" (got \"maglv\"); did you mean \"maglev\"?",
    );
    one_error(
        &with("protocol = \"TCP\""),
        "listener[0].protocol",
        "(got \"TCP\"); did you mean \"tcp\"?",
    );
    // Nothing close: no guess.
    let far = errors(&with("colour = 1\nforwarding = \"tunnel\""));
    assert_eq!(far.len(), 2, "{far:?}");
    assert!(far.iter().all(|e| !e.contains("did you mean")), "{far:?}");
}

#[test]
fn every_structural_and_value_error_at_once_in_file_order() {
    let text = format!(
        "{}flow_tabel_size = 10\n{}{}",
        AGENT,
        listener("helth_check = { interval = \"1s\" }"),
        listener_at("dns", "10.0.0.10", 0, "protocol = 7")
    )
    .replace("  port = 8080\n", "  port = 8080\n  wieght = 3\n");
    let errs = errors(&text);
    let paths: Vec<&str> = errs
        .iter()
        .map(|e| e.split_once(':').map_or(e.as_str(), |(p, _)| p))
        .collect();
    assert_eq!(
        paths,
        [
            "agent.flow_tabel_size",
            "listener[0].helth_check",
            "listener[0].backend[0].wieght",
            "listener[1].protocol",
            "listener[1].backend[0].wieght",
            // Values, checked with the wrong keys set aside.
            "listener[1].port",
        ],
        "{errs:#?}"
    );
    assert!(errs[0].contains("expected one of"), "{}", errs[0]);
    assert!(errs[0].contains("`flow_table_size`"), "{}", errs[0]);
    assert!(errs[0].ends_with("(line 6, column 1)"), "{}", errs[0]);
}

#[test]
fn a_wrong_array_element_sets_its_whole_key_aside() {
    // probe_source is required by the tcp listener's health check; the
    // wrong element is the one error, not also "probe_source is required".
    let text = format!(
        "{}{}",
        AGENT.replace(
            "probe_source = \"100.64.0.1\"",
            "probe_source = [\"100.64.0.1\", 1]"
        ),
        listener("")
    );
    one_error(&text, "agent.probe_source[1]", "invalid type");
}

#[test]
fn toml_syntax_error_has_a_line() {
    let errs = parse("[agent\n").unwrap_err();
    assert_eq!(errs.errors[0].path, "");
    let shown = errs.to_string();
    assert!(shown.starts_with("invalid TOML: "), "{shown}");
    assert!(shown.contains("line 1"), "{shown}");
    assert!(!shown.contains('\n'), "{shown}");
}

#[test]
fn load_names_the_unreadable_file() {
    let path = std::path::Path::new("/nonexistent/slb-test/slb.toml");
    let errs = load(path).unwrap_err();
    assert_eq!(errs.errors[0].path, "/nonexistent/slb-test/slb.toml");
    assert!(errs
        .to_string()
        .starts_with("/nonexistent/slb-test/slb.toml: cannot read"));
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("slb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("slb.toml");
    std::fs::write(&path, format!("{AGENT}{}", listener(""))).unwrap();
    let c = load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c.listeners[0].name, "web");
}

// ------------------------------------------------------------ semantic errors

#[test]
fn required_keys() {
    let errs = errors(&format!("{AGENT}[[listener]]\n[[listener.backend]]\n"));
    assert_eq!(
        errs,
        [
            "listener[0].name: is required",
            "listener[0].vip: is required",
            "listener[0].port: is required",
            "listener[0].backend[0].address: is required",
            "listener[0].backend[0].port: is required",
        ]
    );
    one_error(
        &format!("{AGENT}[[listener]]\nname = \"a\"\nvip = \"10.0.0.1\"\nport = 1\n"),
        "listener[0].backend",
        "at least one [[listener.backend]] is required",
    );
}

#[test]
fn listener_value_errors() {
    let l = |extra: &str| format!("{AGENT}{}", listener(extra));
    one_error(
        &format!("{AGENT}{}", listener_at(" ", "10.0.0.10", 80, "")),
        "listener[0].name",
        "must not be empty",
    );
    // Names are free text, but one line of it: `slb status` prints a
    // listener's name at the end of its row, logs quote it.
    one_error(
        &format!("{AGENT}{}", listener_at("we\\nb\\t", "10.0.0.10", 80, "")),
        "listener[0].name",
        "must not contain control characters (got \"we\\nb\\t\")",
    );
    ok(&format!(
        "{AGENT}{}",
        listener_at("web front (ü)", "10.0.0.10", 80, "")
    ));
    one_error(
        &format!("{AGENT}{}", listener_at("web", "10.0.0.300", 80, "")),
        "listener[0].vip",
        "must be an IPv4 or IPv6 address (got \"10.0.0.300\")",
    );
    one_error(
        &format!("{AGENT}{}", listener_at("web", "0.0.0.0", 80, "")),
        "listener[0].vip",
        "must be a unicast address",
    );
    one_error(
        &format!("{AGENT}{}", listener_at("web", "10.0.0.10", 0, "")),
        "listener[0].port",
        "must be 1..=65535 (got 0)",
    );
    one_error(
        &l("protocol = \"sctp\""),
        "listener[0].protocol",
        "must be one of \"tcp\", \"udp\", \"http\", \"https\" (got \"sctp\")",
    );
    one_error(
        &l("scheduler = \"rr\""),
        "listener[0].scheduler",
        "must be one of \"wrr\", \"wlc\", \"maglev\", \"sh\"",
    );
    one_error(
        &l("forwarding = \"tun\""),
        "listener[0].forwarding",
        "must be one of \"fullnat\", \"nat\", \"dr\"",
    );
    one_error(
        &l("protocol = \"http\"\nforwarding = \"nat\""),
        "listener[0].forwarding",
        "only for tcp/udp listeners",
    );
    one_error(
        &l("persistence = { mode = \"source_ip\" }\nprotocol = \"https\""),
        "listener[0].persistence.mode",
        "\"source_ip\" persistence is only for tcp/udp listeners",
    );
    one_error(
        &l("persistence = { mode = \"insert_cookie\" }"),
        "listener[0].persistence.mode",
        "not supported yet",
    );
    one_error(
        &l("persistence = { timeout = \"5s\" }"),
        "listener[0].persistence.mode",
        "is required",
    );
    one_error(
        &l("acl = { mode = \"block\", cidrs = [\"10.0.0.0/8\"] }"),
        "listener[0].acl.mode",
        "must be one of \"allow\", \"deny\"",
    );
    one_error(
        &l("acl = { mode = \"allow\", cidrs = [] }"),
        "listener[0].acl.cidrs",
        "at least one CIDR",
    );
    one_error(
        &l("acl = { mode = \"allow\" }"),
        "listener[0].acl.cidrs",
        "is required",
    );
    one_error(
        &l("acl = { mode = \"allow\", cidrs = [\"10.0.0.0/8\", \"10.1.0.0/33\"] }"),
        "listener[0].acl.cidrs[1]",
        "must be a CIDR",
    );
    one_error(
        &l("acl = { mode = \"allow\", cidrs = [\"10.1.2.3/16\"] }"),
        "listener[0].acl.cidrs[0]",
        "has host bits set (did you mean 10.1.0.0/16?)",
    );
}

#[test]
fn backend_errors() {
    let with_backend = |b: &str| format!("{AGENT}{}\n  [[listener.backend]]\n{b}\n", listener(""));
    one_error(
        &with_backend("address = \"10.0.1.12\"\nport = 8080\nweight = 150"),
        "listener[0].backend[1].weight",
        "must be 0..=100 (got 150)",
    );
    one_error(
        &with_backend("address = \"10.0.1.12\"\nport = 8080\nweight = -1"),
        "listener[0].backend[1].weight",
        "must be 0..=100",
    );
    one_error(
        &with_backend("address = \"10.0.1.12\"\nport = 65536"),
        "listener[0].backend[1].port",
        "must be 1..=65535 (got 65536)",
    );
    one_error(
        &with_backend("address = \"10.0.1.11\"\nport = 8080"),
        "listener[0].backend[1]",
        "duplicate of backend[0] (10.0.1.11:8080)",
    );
    one_error(
        &with_backend("address = \"2001:db8::1\"\nport = 8080"),
        "listener[0].backend[1].address",
        "IPv6 backend for an IPv4 vip (10.0.0.10)",
    );
    one_error(
        &with_backend("address = \"10.0.0.10\"\nport = 8080"),
        "listener[0].backend[1].address",
        "is the listener's own vip",
    );
    one_error(
        &with_backend("address = \"ff02::1\"\nport = 8080"),
        "listener[0].backend[1].address",
        "must be a unicast address",
    );
    // Same address, other port: fine.
    ok(&with_backend(
        "address = \"10.0.1.11\"\nport = 8081\nweight = 0",
    ));
}

#[test]
fn dr_needs_equal_ports() {
    let text = format!("{AGENT}{}", listener("forwarding = \"dr\""));
    one_error(
        &text,
        "listener[0].backend[0].port",
        "must equal the listener port (80) with forwarding = \"dr\" (got 8080)",
    );
    let good = text.replace("port = 8080", "port = 80");
    let c = ok(&good);
    assert_eq!(c.listeners[0].forwarding, Some(Forwarding::Dr));
}

#[test]
fn health_check_errors() {
    let l = |hc: &str| format!("{AGENT}{}", listener(&format!("health_check = {{ {hc} }}")));
    one_error(
        &l("enabled = false"),
        "listener[0].health_check.enabled",
        "health checks cannot be turned off for tcp listeners",
    );
    one_error(
        &l("protocol = \"icmp\""),
        "listener[0].health_check.protocol",
        "must be one of \"tcp\", \"http\", \"udp\"",
    );
    one_error(
        &l("protocol = \"udp\""),
        "listener[0].health_check.protocol",
        "a udp check needs a udp listener (this is a tcp listener)",
    );
    one_error(
        &l("path = \"/x\""),
        "listener[0].health_check.path",
        "only for http checks (this check's protocol is \"tcp\")",
    );
    one_error(
        &l("protocol = \"http\", payload = \"x\""),
        "listener[0].health_check.payload",
        "only for udp checks",
    );
    one_error(
        &l("healthy_threshold = 1"),
        "listener[0].health_check.healthy_threshold",
        "must be 2..=10 (got 1)",
    );
    one_error(
        &l("unhealthy_threshold = 11"),
        "listener[0].health_check.unhealthy_threshold",
        "must be 2..=10 (got 11)",
    );
    one_error(
        &l("protocol = \"http\", method = \"get\""),
        "listener[0].health_check.method",
        "must be one of \"HEAD\", \"GET\"",
    );
    one_error(
        &l("protocol = \"http\", path = \"health\""),
        "listener[0].health_check.path",
        "must start with '/'",
    );
    one_error(
        &l("protocol = \"http\", path = \"/a b\""),
        "listener[0].health_check.path",
        "letters, digits and",
    );
    let long = format!("/{}", "a".repeat(80));
    one_error(
        &l(&format!("protocol = \"http\", path = \"{long}\"")),
        "listener[0].health_check.path",
        "1..=80 characters",
    );
    one_error(
        &l("protocol = \"http\", host = \"a_b.example\""),
        "listener[0].health_check.host",
        "letters, digits, '-' and '.'",
    );
    one_error(
        &l("protocol = \"http\", port = 0"),
        "listener[0].health_check.port",
        "must be 1..=65535",
    );
    one_error(
        &l("protocol = \"http\", codes = []"),
        "listener[0].health_check.codes",
        "at least one of",
    );
    one_error(
        &l("protocol = \"http\", codes = [\"2xx\", \"200\"]"),
        "listener[0].health_check.codes[1]",
        "must be one of \"2xx\", \"3xx\", \"4xx\", \"5xx\" (got \"200\")",
    );
    one_error(
        &l("protocol = \"http\", codes = [\"2xx\", \"2xx\"]"),
        "listener[0].health_check.codes[1]",
        "listed twice (also at [0])",
    );

    let udp = |hc: &str| {
        format!(
            "{AGENT}{}",
            listener(&format!("protocol = \"udp\"\nhealth_check = {{ {hc} }}"))
        )
    };
    one_error(
        &udp("payload = \"\""),
        "listener[0].health_check.payload",
        "must be 1..=1024 bytes",
    );
    one_error(
        &udp("expect = \"\""),
        "listener[0].health_check.expect",
        "must be 1..=1024 bytes",
    );
    one_error(
        &udp("payload = \"x\", payload_hex = \"78\""),
        "listener[0].health_check.payload_hex",
        "give `payload` or `payload_hex`, not both",
    );
    one_error(
        &udp("expect_hex = \"0g\""),
        "listener[0].health_check.expect_hex",
        "'g' at offset 1 is not a hex digit",
    );
    one_error(
        &udp("payload_hex = \"1b 0\""),
        "listener[0].health_check.payload_hex",
        "an odd number of hex digits (3)",
    );
    one_error(
        &udp("payload_hex = \" \""),
        "listener[0].health_check.payload_hex",
        "must be 1..=1024 bytes (got 0)",
    );
    one_error(
        &l("protocol = \"http\", expect_hex = \"00\""),
        "listener[0].health_check.expect_hex",
        "only for udp checks",
    );
    one_error(
        &udp("codes = [\"2xx\"]"),
        "listener[0].health_check.codes",
        "only for http checks",
    );
    one_error(
        &udp("enabled = false"),
        "listener[0].health_check.enabled",
        "udp listeners",
    );
    // An http check of a tcp listener is fine.
    ok(&l(
        "protocol = \"http\", path = \"/status\", host = \"www.example.com\"",
    ));
}

/// A `%` in an HTTP check's path goes on the wire as it is written, so it
/// must start a percent-encoded byte: `/100%` or `/%zz` would be an invalid
/// request target (RFC 3986), which servers such as nginx answer with 400,
/// and every backend would be marked down for a typo in the config.
#[test]
fn http_check_path_percent_must_start_an_encoded_byte() {
    let l = |p: &str| {
        format!(
            "{AGENT}{}",
            listener(&format!(
                "health_check = {{ protocol = \"http\", path = \"{p}\" }}"
            ))
        )
    };
    for bad in ["/100%", "/%zz", "/a%2", "/a?b=%", "/%%41", "/a%g0"] {
        one_error(
            &l(bad),
            "listener[0].health_check.path",
            "'%' must be followed by two hex digits (write %25 for a literal '%'",
        );
    }
    for good in ["/a%20b", "/%2F%2f", "/q?x=%41&y=%7e", "/a%25"] {
        let c = ok(&l(good));
        let Some(crate::config::HealthCheck {
            probe: crate::config::Probe::Http(http),
            ..
        }) = &c.listeners[0].health_check
        else {
            panic!("no http check");
        };
        assert_eq!(http.path, good);
    }
}

/// SPEC §4 bounds, both ends: interval 1–50 s, timeout 1–300 s,
/// thresholds 2–10.
#[test]
fn health_check_bounds() {
    let l = |hc: &str| format!("{AGENT}{}", listener(&format!("health_check = {{ {hc} }}")));
    let settings = |hc: &str| {
        ok(&l(hc)).listeners[0].health_check.as_ref().map(|h| {
            (
                h.interval,
                h.timeout,
                h.healthy_threshold,
                h.unhealthy_threshold,
            )
        })
    };
    assert_eq!(
        settings(
            "interval = \"1s\", timeout = \"300s\", healthy_threshold = 2, unhealthy_threshold = 10"
        ),
        Some((secs(1), secs(300), 2, 10))
    );
    assert_eq!(
        settings(
            "interval = \"50s\", timeout = \"1s\", healthy_threshold = 10, unhealthy_threshold = 2"
        ),
        Some((secs(50), secs(1), 10, 2))
    );
    one_error(
        &l("interval = \"999ms\""),
        "listener[0].health_check.interval",
        "must be 1s..=50s",
    );
    one_error(
        &l("timeout = \"301s\""),
        "listener[0].health_check.timeout",
        "must be 1s..=300s",
    );
    // The path may be 80 characters long (the 81st is refused above).
    let path80 = format!("/{}", "a".repeat(79));
    ok(&l(&format!("protocol = \"http\", path = \"{path80}\"")));
    ok(&l(
        "protocol = \"http\", path = \"/a-b_c/d.e%20?x=1&y=2#f\"",
    ));
    one_error(
        &l("protocol = \"http\", method = \"POST\""),
        "listener[0].health_check.method",
        "must be one of \"HEAD\", \"GET\"",
    );
}

#[test]
fn agent_errors() {
    let body = listener("");
    let a = |agent: &str| {
        format!("[agent]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n{agent}\n{body}")
    };
    one_error(
        &a("xdp_mode = \"offload\""),
        "agent.xdp_mode",
        "must be one of \"native\", \"skb\", \"auto\"",
    );
    one_error(
        &a("maglev_table_size = 65536"),
        "agent.maglev_table_size",
        "must be a prime number in 1021..=1000003 such as 65537 (got 65536)",
    );
    one_error(
        &a("maglev_table_size = 1019"),
        "agent.maglev_table_size",
        "prime number in 1021..=1000003",
    );
    one_error(
        &a("maglev_table_size = 1000033"),
        "agent.maglev_table_size",
        "prime number in 1021..=1000003",
    );
    ok(&a("maglev_table_size = 1021"));
    ok(&a("maglev_table_size = 1000003"));
    one_error(
        &a("flow_table_size = 1023"),
        "agent.flow_table_size",
        "must be 1024..=67108864 (got 1023)",
    );
    one_error(
        &a("flow_table_size = 67108865"),
        "agent.flow_table_size",
        "must be 1024..=67108864",
    );
    one_error(
        &a("pin_path = \"bpf/slb\""),
        "agent.pin_path",
        "must be an absolute path",
    );
    one_error(
        &a("metrics_listen = \"localhost:9470\""),
        "agent.metrics_listen",
        "must be an address and port",
    );
    one_error(
        &a(&format!("control_socket = \"/{}\"", "s".repeat(107))),
        "agent.control_socket",
        "1..=107 bytes",
    );
    one_error(
        &a("control_socket = \"slb.sock\""),
        "agent.control_socket",
        "must be an absolute path",
    );
    one_error(
        &a("interfaces = [\"eth0\", \"eth0\"]"),
        "agent.interfaces[1]",
        "listed twice",
    );
    one_error(
        &a("interfaces = [\"a-very-long-interface\"]"),
        "agent.interfaces[0]",
        "1..=15 characters",
    );
    ok(&a(
        "interfaces = [\"eth0\", \"veth-lb.10\"]\nmetrics_listen = \"[::1]:9470\"",
    ));
}

#[test]
fn local_address_rules() {
    let body = listener("");
    let with = |agent: &str| format!("[agent]\nprobe_source = \"100.64.0.1\"\n{agent}\n{body}");
    one_error(
        &with(""),
        "agent.local_addresses",
        "required for fullnat listener[0]",
    );
    one_error(
        &with("local_addresses = [\"fd00::10\"]"),
        "agent.local_addresses",
        "no IPv4 address for fullnat listener[0]",
    );
    one_error(
        &with("local_addresses = [\"100.64.0.10\", \"100.64.0.10\"]"),
        "agent.local_addresses[1]",
        "listed twice",
    );
    one_error(
        &with("local_addresses = [\"10.0.0.10\"]"),
        "agent.local_addresses[0]",
        "10.0.0.10 is also the vip of listener[0]",
    );
    one_error(
        &with("local_addresses = [\"10.0.1.11\"]"),
        "agent.local_addresses[0]",
        "10.0.1.11 is also a backend of listener[0]",
    );
    one_error(
        &format!(
            "[agent]\nprobe_source = \"10.0.1.11\"\nlocal_addresses = [\"100.64.0.10\"]\n{body}"
        ),
        "agent.probe_source",
        "10.0.1.11 is also a backend of listener[0]",
    );
    one_error(
        &with("local_addresses = [\"100.64.0.1\"]"),
        "agent.probe_source",
        "100.64.0.1 is also in agent.local_addresses",
    );
    // nat/dr listeners need no pool.
    let nat = format!(
        "[agent]\nprobe_source = \"100.64.0.1\"\n{}",
        listener("forwarding = \"nat\"")
    );
    ok(&nat);

    let many: Vec<String> = (0..65).map(|i| format!("\"100.64.1.{i}\"")).collect();
    one_error(
        &with(&format!("local_addresses = [{}]", many.join(", "))),
        "agent.local_addresses",
        "at most 64 IPv4 addresses (got 65)",
    );
}

#[test]
fn families_of_fullnat_listeners_need_pool_addresses() {
    let text = r#"
[agent]
probe_source = ["100.64.0.1", "fd00:64::1"]
local_addresses = ["100.64.0.10"]

[[listener]]
name = "v4"
vip = "10.0.0.10"
port = 80
  [[listener.backend]]
  address = "10.0.1.1"
  port = 80

[[listener]]
name = "v6-nat"
vip = "2001:db8::10"
port = 80
forwarding = "nat"
  [[listener.backend]]
  address = "2001:db8:1::1"
  port = 80

[[listener]]
name = "v6"
vip = "2001:db8::10"
port = 443
  [[listener.backend]]
  address = "2001:db8:1::1"
  port = 443
"#;
    one_error(
        text,
        "agent.local_addresses",
        "no IPv6 address for fullnat listener[2]",
    );
}

#[test]
fn probe_source_rules() {
    let body = listener("");
    one_error(
        &format!("[agent]\nlocal_addresses = [\"100.64.0.10\"]\n{body}"),
        "agent.probe_source",
        "is required when health checks are enabled",
    );
    one_error(
        &format!(
            "[agent]\nprobe_source = \"fd00::1\"\nlocal_addresses = [\"100.64.0.10\"]\n{body}"
        ),
        "agent.probe_source",
        "no IPv4 address for the health checks of listener[0]",
    );
    one_error(
        &format!("[agent]\nprobe_source = [\"100.64.0.1\", \"100.64.0.2\"]\nlocal_addresses = [\"100.64.0.10\"]\n{body}"),
        "agent.probe_source[1]",
        "at most one IPv4 address (already have 100.64.0.1)",
    );
    one_error(
        &format!("[agent]\nprobe_source = []\nlocal_addresses = [\"100.64.0.10\"]\n{body}"),
        "agent.probe_source",
        "at least one address",
    );
    one_error(
        &format!(
            "[agent]\nprobe_source = \"10.0.0.10\"\nlocal_addresses = [\"100.64.0.10\"]\n{body}"
        ),
        "agent.probe_source",
        "10.0.0.10 is also the vip of listener[0]",
    );
    // Given as an array, the error names the element.
    one_error(
        &format!(
            "[agent]\nprobe_source = [\"fd00::1\", \"10.0.0.10\"]\nlocal_addresses = [\"100.64.0.10\"]\n{body}"
        ),
        "agent.probe_source[1]",
        "10.0.0.10 is also the vip of listener[0]",
    );
    one_error(
        &format!(
            "[agent]\nprobe_source = [\"100.64.0.10\"]\nlocal_addresses = [\"100.64.0.10\"]\n{body}"
        ),
        "agent.probe_source[0]",
        "100.64.0.10 is also in agent.local_addresses",
    );
}

#[test]
fn listeners_unique() {
    let two = |name: &str, vip: &str, extra: &str| {
        format!(
            "{AGENT}{}{}",
            listener(""),
            listener_at(name, vip, 80, extra)
        )
    };
    one_error(
        &two("web", "10.0.0.11", ""),
        "listener[1].name",
        "\"web\" is already the name of listener[0]",
    );
    // Same name and same address: two errors.
    let errs = errors(&two("web", "10.0.0.10", ""));
    assert_eq!(errs.len(), 2, "{errs:?}");
    one_error(
        &two("other", "10.0.0.10", ""),
        "listener[1]",
        "10.0.0.10 port 80 over tcp is already used by listener[0] (\"web\")",
    );
    // http is TCP too.
    one_error(
        &two("other", "10.0.0.10", "protocol = \"http\""),
        "listener[1]",
        "over tcp is already used by listener[0]",
    );
    // udp on the same vip and port is a different listener.
    ok(&two("other", "10.0.0.10", "protocol = \"udp\""));
}

#[test]
fn dataplane_limits() {
    let mut text = String::from(AGENT);
    for i in 0..65 {
        text.push_str(&listener_at(&format!("l{i}"), "10.0.0.10", 1000 + i, ""));
    }
    one_error(&text, "listener", "at most 64 tcp/udp listeners (got 65)");
    // http listeners use no dataplane slot.
    let mut text = String::from(AGENT);
    for i in 0..70 {
        let proto = if i < 64 { "tcp" } else { "http" };
        text.push_str(&listener_at(
            &format!("l{i}"),
            "10.0.0.10",
            1000 + i,
            &format!("protocol = \"{proto}\""),
        ));
    }
    ok(&text);

    let mut text = format!("{AGENT}[[listener]]\nname = \"big\"\nvip = \"10.0.0.10\"\nport = 80\nscheduler = \"maglev\"\n");
    for i in 0..4097u32 {
        text.push_str(&format!(
            "[[listener.backend]]\naddress = \"10.1.{}.{}\"\nport = 80\n",
            i / 256,
            i % 256
        ));
    }
    one_error(
        &text,
        "listener",
        "at most 4096 backends in all tcp/udp listeners (got 4097)",
    );
}

/// The ACL trie has a fixed size: a file with more CIDRs than it holds is
/// refused by validation (a reload would otherwise fail part way through,
/// on the kernel's "no space left on device"). Exactly at the limit is
/// fine; CIDRs of the other family (never written) and repeats do not
/// count, and neither do http/https listeners' lists (not in the trie).
#[test]
fn acl_entries_are_limited_to_the_trie_size() {
    let cidrs = |from: u32, n: u32| -> String {
        (from..from + n)
            .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0x0b00_0000 + i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let half = MAX_ACL_ENTRIES / 2;
    let two = |second: u32, extra: &str| {
        format!(
            "{AGENT}{}{}",
            listener_at(
                "a",
                "10.0.0.10",
                80,
                &format!(
                    "acl = {{ mode = \"deny\", cidrs = [{}, \"fd00::/64\"] }}",
                    cidrs(0, half)
                )
            ),
            listener_at(
                "b",
                "10.0.0.10",
                81,
                &format!(
                    "{extra}acl = {{ mode = \"allow\", cidrs = [{}, {}] }}",
                    cidrs(half, second),
                    cidrs(half, 1)
                )
            ),
        )
    };
    ok(&two(half, ""));
    one_error(
        &two(half + 1, ""),
        "listener",
        &format!(
            "at most {MAX_ACL_ENTRIES} acl.cidrs in all tcp/udp listeners (got {})",
            MAX_ACL_ENTRIES + 1
        ),
    );
    ok(&two(half + 1, "protocol = \"http\"\n"));
}

/// `sh` reads the same Maglev table, and a `wrr` sequence has an entry per
/// backend at least: with more backends than slots, `sh` would silently
/// leave backends out and a `wrr` table would run past its half of the
/// lookup-table map into the table of another listener.
#[test]
fn every_table_scheduler_must_fit_its_backends() {
    for sched in ["maglev", "sh", "wrr"] {
        let mut text = format!("{AGENT}maglev_table_size = 1021\n[[listener]]\nname = \"big\"\nvip = \"10.0.0.10\"\nport = 80\nscheduler = \"{sched}\"\n");
        for i in 0..1022u32 {
            text.push_str(&format!(
                "[[listener.backend]]\naddress = \"10.1.{}.{}\"\nport = 80\n",
                i / 256,
                i % 256
            ));
        }
        one_error(
            &text,
            "listener[0].scheduler",
            &format!("{sched} needs agent.maglev_table_size (1021) to be at least the number of backends (1022)"),
        );
    }
}

#[test]
fn many_errors_at_once() {
    let text = r#"
[agent]
xdp_mode = "fast"
flow_table_size = 10
local_addresses = ["100.64.0.10"]

[[listener]]
name = "web"
vip = "10.0.0.10"
port = 80
protocol = "tcp"
idle_timeout = "15"

  [[listener.backend]]
  address = "10.0.1.11"
  port = 8080
  weight = 101

[[listener]]
name = "web"
vip = "10.0.0.11"
port = 70000
protocol = "udp"
health_check = { protocol = "http", payload = "x" }

  [[listener.backend]]
  address = "10.0.1.1"
  port = 53
"#;
    let errs = errors(text);
    assert_eq!(
        errs,
        [
            "agent.xdp_mode: must be one of \"native\", \"skb\", \"auto\" (got \"fast\")",
            "agent.flow_table_size: must be 1024..=67108864 (got 10)",
            "listener[0].idle_timeout: must be a duration string with a unit ms, s or m, e.g. \"5s\" (got \"15\")",
            "listener[0].backend[0].weight: must be 0..=100 (got 101)",
            "listener[1].port: must be 1..=65535 (got 70000)",
            "listener[1].health_check.payload: only for udp checks (this check's protocol is \"http\")",
            "listener[1].name: \"web\" is already the name of listener[0]",
            "agent.probe_source: is required when health checks are enabled (the source address of health checks, e.g. \"100.64.0.1\")",
        ]
    );
    let shown = parse(text).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), errs.len());
}

#[test]
fn require_dataplane() {
    let c = ok(&format!("{AGENT}{}", listener("")).replace("interfaces = [\"eth0\"]", ""));
    let errs = c.require_dataplane().unwrap_err();
    assert_eq!(errs.errors[0].path, "agent.interfaces");
    assert!(errs.errors[0].message.contains("at least one interface"));
    assert!(ok(&format!("{AGENT}{}", listener("")))
        .require_dataplane()
        .is_ok());
}

/// `slb status -c` / `slb reload -c` find the agent's socket in a file
/// that does not validate (the operator is still fixing it).
#[test]
fn control_socket_is_read_from_an_invalid_file() {
    let dir = std::env::temp_dir().join(format!("slb-cs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("slb.toml");
    std::fs::write(
        &file,
        "[agent]\ncontrol_socket = \"/tmp/x.sock\"\n[[listener]]\nweight = 150\n",
    )
    .unwrap();
    assert!(super::load(&file).is_err());
    assert_eq!(
        super::control_socket_of(&file).unwrap(),
        std::path::PathBuf::from("/tmp/x.sock")
    );
    std::fs::write(&file, "[[listener]]\nname = 1\n").unwrap();
    assert_eq!(
        super::control_socket_of(&file).unwrap(),
        std::path::PathBuf::from(super::defaults::CONTROL_SOCKET)
    );
    std::fs::write(&file, "[agent\n").unwrap();
    assert!(super::control_socket_of(&file).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The dataplane's tables hold IPv4 addresses IPv4-mapped, so
/// `::ffff:10.0.0.10` and `10.0.0.10` are one key there: an "IPv6"
/// listener on the mapped form shared the IPv4 listener's entry (the two
/// below, on one port, replaced each other), and a mapped pool address
/// would send IPv6 packets from an address the backend's kernel drops.
/// Such addresses are refused wherever an address is given, naming the
/// IPv4 form.
#[test]
fn ipv4_mapped_ipv6_addresses_are_refused() {
    let text = r#"
[agent]
interfaces = ["eth0"]
probe_source = ["100.64.0.1", "::ffff:100.64.0.2"]
local_addresses = ["100.64.0.10", "::ffff:100.64.0.11"]

[[listener]]
name = "v4"
vip = "10.0.0.10"
port = 80
  [[listener.backend]]
  address = "10.0.1.11"
  port = 8080

[[listener]]
name = "mapped"
vip = "::ffff:10.0.0.10"
port = 80
  [[listener.backend]]
  address = "::ffff:10.0.1.12"
  port = 8080
"#;
    let errs = errors(text);
    for (path, v4) in [
        ("agent.probe_source[1]", "100.64.0.2"),
        ("agent.local_addresses[1]", "100.64.0.11"),
        ("listener[1].vip", "10.0.0.10"),
        ("listener[1].backend[0].address", "10.0.1.12"),
    ] {
        let want = format!("{path}: IPv4-mapped IPv6 address: write it as {v4}");
        assert!(
            errs.iter().any(|e| e.starts_with(&want)),
            "{want} missing from {errs:#?}"
        );
    }
}

/// A reload cannot change `[agent]` settings (the maps are sized, the
/// program attached and the sockets bound at start): the refusal names
/// every changed key with its running and its new value, and nothing
/// else.
#[test]
fn agent_changes_name_each_changed_key_with_both_values() {
    let running = ok(&format!("{AGENT}{}", listener("")));
    let same = ok(&format!(
        "{AGENT}{}",
        listener_at("www", "10.0.0.11", 81, "")
    ));
    assert!(running.agent.changes_to(&same.agent).is_empty());
    let changed = AGENT.replace("\"eth0\"", "\"eth1\"")
        + "flow_table_size = 2048\nmetrics_listen = \"127.0.0.1:9999\"\n";
    let new = ok(&format!("{changed}{}", listener("")));
    let errs: Vec<String> = running
        .agent
        .changes_to(&new.agent)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("agent.interfaces: ")
            && errs[0].contains(r#"["eth0"]"#)
            && errs[0].contains(r#"["eth1"]"#),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("agent.metrics_listen: ")
            && errs[1].contains("127.0.0.1:9470")
            && errs[1].contains("127.0.0.1:9999"),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with("agent.flow_table_size: ")
            && errs[2].contains("1048576")
            && errs[2].contains("2048"),
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.contains("restart")), "{errs:#?}");
}

/// The file has no way to give an IPv6 link-local address its interface
/// (`fe80::1%eth0` is not an address to it), and without one the kernel
/// refuses to bind to it or connect to it (EINVAL): every health check
/// of such a backend, every proxied request to it and every probe from
/// such a source failed at run time, and an http/https VIP could not be
/// bound. Refused wherever an address is given.
#[test]
fn ipv6_link_local_addresses_are_refused() {
    let text = r#"
[agent]
interfaces = ["eth0"]
probe_source = ["100.64.0.1", "fe80::1"]
local_addresses = ["fd00:64::10", "fe80::10"]

[[listener]]
name = "v6"
vip = "2001:db8::10"
port = 80
  [[listener.backend]]
  address = "fe80::11"
  port = 8080

[[listener]]
name = "web"
vip = "fe80::20"
port = 80
protocol = "http"
  [[listener.backend]]
  address = "2001:db8::21"
  port = 8080
"#;
    let errs = errors(text);
    for (path, addr) in [
        ("agent.probe_source[1]", "fe80::1"),
        ("agent.local_addresses[1]", "fe80::10"),
        ("listener[0].backend[0].address", "fe80::11"),
        ("listener[1].vip", "fe80::20"),
    ] {
        let want = format!("{path}: {addr} is a link-local address");
        assert!(
            errs.iter().any(|e| e.starts_with(&want)),
            "{want} missing from {errs:#?}"
        );
    }
    // IPv4 link-local addresses need no interface to be used.
    ok(&format!(
        "{AGENT}{}",
        listener_at("web", "169.254.10.10", 80, "")
    ));
}

/// Loopback addresses never leave the host: a tcp/udp VIP there gets no
/// traffic through the XDP program, a tcp/udp backend there is forwarded
/// to nowhere (the program redirects packets out of an interface), a
/// FULLNAT source there is one no backend can answer, and a probe source
/// there cannot reach a backend elsewhere (the kernel refuses the connect
/// with EINVAL): every check failed, every backend was marked down.
/// http/https listeners may listen on and proxy to loopback, and a
/// loopback probe source may check backends on loopback.
#[test]
fn loopback_addresses_only_where_they_can_work() {
    let errs = errors(&format!(
        "[agent]\ninterfaces = [\"eth0\"]\nprobe_source = \"100.64.0.1\"\n\
         local_addresses = [\"100.64.0.10\", \"127.0.0.5\"]\n{}{}",
        listener_at("vip", "127.0.0.1", 80, ""),
        listener_at("backend", "10.0.0.10", 80, "")
            .replace("address = \"10.0.1.11\"", "address = \"127.0.0.1\""),
    ));
    for want in [
        "agent.local_addresses[1]: 127.0.0.5 is a loopback address",
        "listener[0].vip: 127.0.0.1 is a loopback address",
        "listener[1].backend[0].address: 127.0.0.1 is a loopback address",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want} missing from {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 3, "{errs:#?}");

    one_error(
        &format!(
            "[agent]\nprobe_source = [\"fd00::1\", \"127.0.0.2\"]\n{}",
            listener("protocol = \"http\"")
        ),
        "agent.probe_source[1]",
        "127.0.0.2 is a loopback address: health checks from it cannot reach 10.0.1.11 \
         (listener[0])",
    );
    one_error(
        &format!(
            "[agent]\nprobe_source = \"::1\"\nlocal_addresses = [\"fd00::10\"]\n{}",
            listener_at("v6", "2001:db8::10", 80, "")
                .replace("address = \"10.0.1.11\"", "address = \"2001:db8::11\"")
        ),
        "agent.probe_source",
        "::1 is a loopback address",
    );
    // A proxy in front of local applications.
    let c = ok(&format!(
        "[agent]\nprobe_source = \"127.0.0.2\"\n{}",
        listener_at("web", "127.0.0.1", 80, "protocol = \"http\"")
            .replace("address = \"10.0.1.11\"", "address = \"127.0.0.1\"")
    ));
    assert_eq!(
        c.listeners[0].backends[0].address,
        "127.0.0.1".parse::<IpAddr>().unwrap()
    );
}

/// The metrics endpoint and the proxy's listening sockets are bound in one
/// process: on the same address and port (or a wildcard address that
/// covers the VIP) the second bind failed with "address in use" only when
/// the agent started.
#[test]
fn metrics_listen_is_not_an_http_listener_address() {
    let http = |metrics: &str, vip: &str| {
        format!(
            "[agent]\nprobe_source = [\"100.64.0.1\", \"fd00::1\"]\nmetrics_listen = \"{metrics}\"\n{}",
            listener_at("web", vip, 80, "protocol = \"http\"")
        )
    };
    for metrics in ["10.0.0.10:80", "0.0.0.0:80", "[::]:80"] {
        one_error(
            &http(metrics, "10.0.0.10"),
            "agent.metrics_listen",
            &format!("{metrics} takes the address and port of listener[0] (10.0.0.10:80)"),
        );
    }
    one_error(
        &http("[2001:db8::10]:80", "2001:db8::10"),
        "agent.metrics_listen",
        "takes the address and port of listener[0] ([2001:db8::10]:80)",
    );
    // Another port, another address, or an IPv4 wildcard beside an IPv6 VIP.
    ok(&http("10.0.0.10:9470", "10.0.0.10"));
    ok(&http("10.0.0.11:80", "10.0.0.10"));
    ok(&http("0.0.0.0:80", "2001:db8::10"));
}
