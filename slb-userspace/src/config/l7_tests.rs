//! Unit tests of the keys of http/https listeners.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tests::one_error;
use super::*;

/// PEM files in a fresh directory: www (www.example.com), api
/// (api.example.com), a CA, and a key of another certificate.
pub(super) struct Files {
    pub(super) dir: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn files() -> Files {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "slb-config-l7-{}-{}",
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
    Files { dir }
}

fn ok_in(text: &str, dir: &Path) -> Config {
    match parse_in(text, dir) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// An http listener (checks off) with one backend; `extra` in its table.
fn http(extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"web\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"http\"\n\
         health_check = {{ enabled = false }}\n{extra}\n\
         [[listener.backend]]\naddress = \"10.0.1.11\"\nport = 8080\n"
    )
}

fn tcp(extra: &str) -> String {
    format!(
        "[agent]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n\
         [[listener]]\nname = \"t\"\nvip = \"10.0.0.10\"\nport = 80\n{extra}\n\
         [[listener.backend]]\naddress = \"10.0.1.11\"\nport = 8080\n"
    )
}

#[test]
fn example_parses_with_every_key() {
    let f = files();
    let c = ok_in(include_str!("../l7/example.toml"), &f.dir);
    c.require_certificates().unwrap();
    assert_eq!(c.l7_listeners().count(), 2);
    let redirect = &c.listeners[0];
    assert!(redirect.backends.is_empty());
    assert!(redirect.l7.as_ref().unwrap().redirect_https);
    let www = &c.listeners[1];
    assert_eq!(
        www.scheduler,
        Scheduler::Maglev,
        "hash is consistent hashing"
    );
    let l7 = www.l7.as_ref().unwrap();
    assert_eq!(l7.scheduler, L7Scheduler::Hash);
    assert_eq!(l7.hash_key, Some(HashKey::Cookie("uid".into())));
    assert_eq!(
        l7.persistence,
        Some(CookiePersistence {
            mode: CookieMode::InsertCookie,
            cookie: "SERVERID".into(),
            timeout: Some(Duration::from_secs(1000)),
        })
    );
    assert_eq!(l7.backend_connect_timeout, Duration::from_secs(5));
    assert_eq!(l7.backend_response_timeout, Duration::from_secs(60));
    assert_eq!(l7.client_idle_timeout, Duration::from_secs(15));
    assert_eq!(l7.request_header_timeout, Duration::from_secs(60));
    assert_eq!(l7.max_requests_per_connection, 100);
    assert_eq!(l7.max_header_size, 16384);
    assert_eq!(www.idle_timeout, Duration::from_secs(60));
    assert_eq!(l7.certificates.len(), 2);
    assert_eq!(
        l7.certificates[0].cert,
        f.dir.join("www.crt"),
        "relative to the file"
    );
    assert_eq!(l7.client_ca, Some(f.dir.join("ca.pem")));
    assert_eq!(l7.rules.len(), 2);
    assert_eq!(l7.rules[0].host.as_deref(), Some("api.example.com"));
    assert_eq!(l7.groups.len(), 2);
    assert_eq!(l7.group("api").unwrap().backends[1].weight, 50);
    // Health keys: every backend of every group, once.
    assert_eq!(www.all_backends().len(), 5);
    // The printed form nests the L7 settings.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["listener"][1]["l7"]["scheduler"], "hash");
    assert!(json["listener"].as_array().unwrap().len() == 2);
}

#[test]
fn defaults_of_a_plain_http_listener() {
    let c = parse(&http("")).unwrap();
    let l7 = c.listeners[0].l7.clone().unwrap();
    assert_eq!(l7.scheduler, L7Scheduler::Wrr);
    assert_eq!(l7.persistence, None);
    assert!(!l7.gzip && !l7.redirect_https);
    assert!(l7.rules.is_empty() && l7.groups.is_empty());
    assert_eq!(
        c.listeners[0].l7.as_ref().map(|l| l.max_header_size),
        Some(16384)
    );
    // tcp listeners have none.
    let c = parse(&tcp("")).unwrap();
    assert_eq!(c.listeners[0].l7, None);
}

#[test]
fn l7_keys_are_errors_on_tcp_listeners() {
    one_error(
        &tcp("gzip = true"),
        "listener[0].gzip",
        "only for http/https listeners",
    );
    one_error(
        &tcp("[[listener.rule]]\npath = \"/\"\ngroup = \"default\""),
        "listener[0].rule",
        "only for http/https listeners (this is a tcp listener)",
    );
    one_error(
        &tcp("persistence = { mode = \"insert_cookie\" }"),
        "listener[0].persistence.mode",
        "not supported yet",
    );
}

#[test]
fn scheduler_and_hash_key() {
    one_error(
        &http("scheduler = \"maglev\""),
        "listener[0].scheduler",
        "\"maglev\" is a tcp/udp scheduler; http/https listeners use \"wrr\", \"wlc\" or \"hash\"",
    );
    one_error(
        &http("scheduler = \"hash\""),
        "listener[0].hash_key",
        "is required",
    );
    one_error(
        &http("hash_key = { header = \"X-User\" }"),
        "listener[0].hash_key",
        "only with scheduler = \"hash\"",
    );
    one_error(
        &http("scheduler = \"hash\"\nhash_key = { header = \"X User\" }"),
        "listener[0].hash_key.header",
        "must be a header name",
    );
    one_error(
        &http("scheduler = \"hash\"\nhash_key = { header = \"a\", cookie = \"b\" }"),
        "listener[0].hash_key",
        "exactly one of header or cookie",
    );
    let c = parse(&http(
        "scheduler = \"hash\"\nhash_key = { header = \"X-User\" }",
    ))
    .unwrap();
    assert_eq!(
        c.listeners[0].l7.as_ref().unwrap().hash_key,
        Some(HashKey::Header("x-user".into()))
    );
}

#[test]
fn persistence_modes() {
    one_error(
        &http("persistence = { mode = \"rewrite_cookie\" }"),
        "listener[0].persistence.cookie",
        "is required with mode = \"rewrite_cookie\"",
    );
    one_error(
        &http("persistence = { mode = \"rewrite_cookie\", cookie = \"S\", timeout = \"5s\" }"),
        "listener[0].persistence.timeout",
        "only with mode = \"insert_cookie\"",
    );
    one_error(
        &http("persistence = { mode = \"sticky\" }"),
        "listener[0].persistence.mode",
        "must be one of \"insert_cookie\", \"rewrite_cookie\"",
    );
    one_error(
        &http("persistence = { mode = \"insert_cookie\", cookie = \"a;b\" }"),
        "listener[0].persistence.cookie",
        "must be a cookie name",
    );
    // Every key of the table is checked, whatever is wrong with the
    // others: `slb validate` lists every error at once.
    let all = |extra: &str| -> Vec<String> {
        match parse(&http(extra)) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e.iter().map(|e| e.path.clone()).collect(),
        }
    };
    assert_eq!(
        all("persistence = { mode = \"insert_cookie\", cookie = \"a b\", timeout = \"5h\" }"),
        [
            "listener[0].persistence.cookie",
            "listener[0].persistence.timeout"
        ]
    );
    assert_eq!(
        all("persistence = { cookie = \"a b\", timeout = \"0s\" }"),
        [
            "listener[0].persistence.mode",
            "listener[0].persistence.cookie",
            "listener[0].persistence.timeout"
        ]
    );
    assert_eq!(
        all("persistence = { mode = \"rewrite_cookie\", timeout = \"5s\" }"),
        [
            "listener[0].persistence.cookie",
            "listener[0].persistence.timeout"
        ]
    );
    let c = parse(&http(
        "persistence = { mode = \"rewrite_cookie\", cookie = \"SESSIONID\" }",
    ))
    .unwrap();
    let p = c.listeners[0].l7.clone().unwrap().persistence.unwrap();
    assert_eq!(
        (p.mode, p.cookie.as_str(), p.timeout),
        (CookieMode::RewriteCookie, "SESSIONID", None)
    );
}

#[test]
fn timeouts_and_limits() {
    one_error(
        &http("backend_response_timeout = \"5ms\""),
        "listener[0].backend_response_timeout",
        "must be 10ms..=3600s",
    );
    one_error(
        &http("client_idle_timeout = 15"),
        "listener[0].client_idle_timeout",
        "must be a duration string",
    );
    one_error(
        &http("max_requests_per_connection = 0"),
        "listener[0].max_requests_per_connection",
        "must be 1..=1000000",
    );
    one_error(
        &http("max_header_size = 100"),
        "listener[0].max_header_size",
        "must be 1024..=1048576",
    );
    let c = parse(&http(
        "backend_connect_timeout = \"250ms\"\nmax_requests_per_connection = 3",
    ))
    .unwrap();
    let l7 = c.listeners[0].l7.clone().unwrap();
    assert_eq!(l7.backend_connect_timeout, Duration::from_millis(250));
    assert_eq!(l7.max_requests_per_connection, 3);
}

#[test]
fn rules_and_groups() {
    let group = "[[listener.group]]\nname = \"api\"\n[[listener.group.backend]]\naddress = \"10.0.2.1\"\nport = 80\n";
    one_error(
        &http("[[listener.rule]]\npath = \"/x\"\ngroup = \"nope\""),
        "listener[0].rule[0].group",
        "no group \"nope\" (groups: \"default\")",
    );
    one_error(
        &http("[[listener.rule]]\ngroup = \"default\""),
        "listener[0].rule[0]",
        "needs host, path or both",
    );
    one_error(
        &http("[[listener.rule]]\nhost = \"a:80\"\ngroup = \"default\""),
        "listener[0].rule[0].host",
        "must be a host name",
    );
    one_error(
        &http("[[listener.rule]]\npath = \"api\"\ngroup = \"default\""),
        "listener[0].rule[0].path",
        "must be a path prefix starting with '/'",
    );
    let mut many = String::new();
    for i in 0..21 {
        many.push_str(&format!(
            "[[listener.rule]]\npath = \"/{i}\"\ngroup = \"default\"\n"
        ));
    }
    one_error(
        &http(&many),
        "listener[0].rule",
        "at most 20 rules (got 21)",
    );
    one_error(
        &http(&format!("{group}{group}")),
        "listener[0].group[1].name",
        "\"api\" is already the name of group[0]",
    );
    one_error(
        &http("[[listener.group]]\nname = \"default\"\n[[listener.group.backend]]\naddress = \"10.0.2.1\"\nport = 80"),
        "listener[0].group[0].name",
        "\"default\" is the listener's own",
    );
    one_error(
        &http("[[listener.group]]\nname = \"api\""),
        "listener[0].group[0].backend",
        "at least one",
    );
    one_error(
        &http("[[listener.group]]\nname = \"api\"\n[[listener.group.backend]]\naddress = \"10.0.2.1\"\nport = 80\nweight = 101"),
        "listener[0].group[0].backend[0].weight",
        "must be 0..=100",
    );
    let c = parse(&http(&format!(
        "[[listener.rule]]\nhost = \"*.Example.com\"\npath = \"/api/\"\ngroup = \"api\"\n{group}"
    )))
    .unwrap();
    let l7 = c.listeners[0].l7.clone().unwrap();
    assert_eq!(l7.rules[0].host.as_deref(), Some("*.example.com"));
    assert_eq!(l7.groups[0].backends[0].port, 80);
}

/// A rule may name an IPv6 address as it may an IPv4 one (dual stack: a
/// request to the VIP by address), with or without brackets; it is held
/// as a request's `Host` names it, in canonical form, and two spellings
/// of one address are one host.
#[test]
fn rule_hosts_may_be_ipv6_addresses() {
    let c = parse(&http(
        "[[listener.rule]]\nhost = \"2001:DB8:0::10\"\ngroup = \"default\"\n\
         [[listener.rule]]\nhost = \"[::1]\"\ngroup = \"default\"\n\
         [[listener.rule]]\nhost = \"10.0.0.10\"\ngroup = \"default\"",
    ))
    .unwrap();
    let hosts: Vec<_> = c.listeners[0]
        .l7
        .as_ref()
        .unwrap()
        .rules
        .iter()
        .map(|r| r.host.clone().unwrap())
        .collect();
    assert_eq!(hosts, ["[2001:db8::10]", "[::1]", "10.0.0.10"]);
    one_error(
        &http(
            "[[listener.rule]]\nhost = \"[2001:db8::10]\"\ngroup = \"default\"\n\
             [[listener.rule]]\nhost = \"2001:db8:0::10\"\ngroup = \"default\"",
        ),
        "listener[0].rule[1]",
        "has the host and path of rule[0]",
    );
    for bad in ["[zz]", "[::1]:80", "*.[::1]", "[fe80::1%eth0]"] {
        one_error(
            &http(&format!(
                "[[listener.rule]]\nhost = \"{bad}\"\ngroup = \"default\""
            )),
            "listener[0].rule[0].host",
            "must be a host name",
        );
    }
}

/// Rules match the request's path without its query (`uri().path()`),
/// so a prefix with a `?` or `#` matched no request as meant; and a rule
/// with the host and path of an earlier one (as the router reads them:
/// host case-insensitive, path normalised) always lost the tie to it.
#[test]
fn rules_that_can_never_match_are_refused() {
    for p in ["/search?q=", "/page#top"] {
        one_error(
            &http(&format!(
                "[[listener.rule]]\npath = \"{p}\"\ngroup = \"default\""
            )),
            "listener[0].rule[0].path",
            "rules match the path only, without the query ('?') or fragment ('#')",
        );
    }
    let group = "[[listener.group]]\nname = \"api\"\n[[listener.group.backend]]\naddress = \"10.0.2.1\"\nport = 80\n";
    one_error(
        &http(&format!(
            "[[listener.rule]]\nhost = \"www.example.com\"\npath = \"/api/\"\ngroup = \"api\"\n\
             [[listener.rule]]\npath = \"/api/\"\ngroup = \"api\"\n\
             [[listener.rule]]\nhost = \"WWW.example.com\"\npath = \"/api//./\"\ngroup = \"default\"\n{group}"
        )),
        "listener[0].rule[2]",
        "has the host and path of rule[0], which wins: it would never be used",
    );
    // Same path, other host: both are used.
    let both = http(&format!(
        "[[listener.rule]]\nhost = \"a.example.com\"\npath = \"/api/\"\ngroup = \"api\"\n\
         [[listener.rule]]\nhost = \"b.example.com\"\npath = \"/api/\"\ngroup = \"api\"\n{group}"
    ));
    if let Err(e) = parse(&both) {
        panic!("expected a valid config, got:\n{e}");
    }
}

#[test]
fn group_backends_need_a_probe_source_of_their_family() {
    let text = "[[listener]]\nname = \"web\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"http\"\n\
                [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 80\n\
                [[listener.group]]\nname = \"v6\"\n[[listener.group.backend]]\naddress = \"2001:db8::1\"\nport = 80\n";
    let with_v4 = format!("[agent]\nprobe_source = \"100.64.0.1\"\n{text}");
    one_error(
        &with_v4,
        "agent.probe_source",
        "no IPv6 address for the health checks",
    );
}

#[test]
fn tls_keys() {
    let f = files();
    let d = f.dir.display();
    let https = |extra: &str| {
        format!(
            "[[listener]]\nname = \"s\"\nvip = \"10.0.0.10\"\nport = 443\nprotocol = \"https\"\n\
             health_check = {{ enabled = false }}\n{extra}\n\
             [[listener.backend]]\naddress = \"10.0.1.11\"\nport = 8080\n"
        )
    };
    let cert = |c: &str, k: &str| {
        format!("[[listener.certificate]]\ncert = \"{d}/{c}\"\nkey = \"{d}/{k}\"\n")
    };
    // A valid pair; then a key of another certificate.
    assert!(parse(&https(&cert("www.crt", "www.key"))).is_ok());
    // Both files named (the error's path names only the pair); a file
    // with several keys, of which the first does not match, says so.
    one_error(
        &https(&cert("www.crt", "api.key")),
        "listener[0].certificate[0]",
        &format!("the key in {d}/api.key does not belong to the certificate in {d}/www.crt"),
    );
    let mut two_keys = std::fs::read(f.dir.join("api.key")).unwrap();
    two_keys.extend(std::fs::read(f.dir.join("www.key")).unwrap());
    std::fs::write(f.dir.join("two.key"), two_keys).unwrap();
    one_error(
        &https(&cert("www.crt", "two.key")),
        "listener[0].certificate[0]",
        &format!("{d}/two.key holds 2 private keys, of which the first is used"),
    );
    one_error(
        &https(&cert("missing.crt", "www.key")),
        "listener[0].certificate[0].cert",
        "cannot read",
    );
    one_error(
        &https(&cert("www.key", "www.key")),
        "listener[0].certificate[0].cert",
        "no PEM CERTIFICATE block",
    );
    one_error(
        &https(&cert("www.crt", "www.crt")),
        "listener[0].certificate[0].key",
        "no PEM PRIVATE KEY block",
    );
    one_error(
        &https(&format!(
            "client_ca = \"{d}/www.key\"\n{}",
            cert("www.crt", "www.key")
        )),
        "listener[0].client_ca",
        "no PEM CERTIFICATE block",
    );
    one_error(
        &https(&format!(
            "redirect_https = true\n{}",
            cert("www.crt", "www.key")
        )),
        "listener[0].redirect_https",
        "only for http listeners",
    );
    one_error(
        &http(&cert("www.crt", "www.key")),
        "listener[0].certificate",
        "only for https listeners",
    );
    one_error(
        &http("client_ca = \"/x\""),
        "listener[0].client_ca",
        "only for https listeners",
    );
    // Keys that cannot be used, each with a message saying why.
    std::fs::write(f.dir.join("enc8.key"), ENCRYPTED_PKCS8).unwrap();
    std::fs::write(f.dir.join("enc1.key"), ENCRYPTED_LEGACY).unwrap();
    std::fs::write(f.dir.join("p521.key"), P521).unwrap();
    for k in ["enc8.key", "enc1.key"] {
        one_error(
            &https(&cert("www.crt", k)),
            "listener[0].certificate[0].key",
            "the private key is encrypted",
        );
    }
    one_error(
        &https(&cert("www.crt", "p521.key")),
        "listener[0].certificate[0]",
        "the key's type or size is not supported",
    );
    // An intermediate before the server's certificate.
    let mut reversed = std::fs::read(f.dir.join("api.crt")).unwrap();
    reversed.extend(std::fs::read(f.dir.join("www.crt")).unwrap());
    std::fs::write(f.dir.join("reversed.crt"), reversed).unwrap();
    one_error(
        &https(&cert("reversed.crt", "www.key")),
        "listener[0].certificate[0]",
        &format!("the key belongs to certificate 2 of {d}/reversed.crt, not to the first"),
    );
    // No certificate: valid for `parse`, refused by the proxy's check.
    let c = parse(&https("")).unwrap();
    let errs = c.require_certificates().unwrap_err();
    assert_eq!(errs.errors[0].path, "listener[0].certificate");
}

#[test]
fn redirect_only_listener_needs_no_backend() {
    let text = "[[listener]]\nname = \"r\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"http\"\n\
                redirect_https = true\nhealth_check = { enabled = false }\n";
    let c = parse(text).unwrap();
    assert!(c.listeners[0].backends.is_empty());
    one_error(
        &text.replace("redirect_https = true\n", ""),
        "listener[0].backend",
        "at least one [[listener.backend]] is required",
    );
}

/// A listener that only redirects to https has no backend to check, so it
/// needs no probe source.
#[test]
fn a_redirect_only_listener_needs_no_probe_source() {
    let text = "[[listener]]\nname = \"h\"\nvip = \"10.0.0.10\"\nport = 80\nprotocol = \"http\"\nredirect_https = true\n";
    let cfg = super::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listeners.len(), 1);
}

/// `--print` shows an http listener's own scheduler and persistence as
/// keys of the listener, as the file has them, not the planner's
/// stand-ins.
#[test]
fn printed_http_listeners_have_no_l4_fields() {
    let text = format!(
        "[agent]\nprobe_source = \"100.64.0.1\"\n{}",
        http("scheduler = \"hash\"\nhash_key = { header = \"X-User\" }")
    );
    let cfg = super::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let v = super::effective_json(&cfg).unwrap();
    let l = &v["listener"][0];
    assert_eq!(l["scheduler"], "hash", "{l}");
    assert_eq!(l["hash_key"]["header"], "x-user", "{l}");
    assert!(l.get("persistence").is_none(), "{l}");
    assert!(l.get("forwarding").is_none(), "{l}");
    assert!(l.get("l7").is_none(), "{l}");
    assert_eq!(
        l["health_check"],
        serde_json::json!({ "enabled": false }),
        "{l}"
    );
}

/// `openssl pkcs8 -topk8` of a P-256 key, passphrase "secret".
const ENCRYPTED_PKCS8: &str = "\
-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAj9Hc4rxGpUyAICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEP7syeGQke2xNEuvxTZthQIEgZDX
eDz9gN32pCawiH21vh8IlXoGcGxdLFDsitjlioXYwD/RQS7uATy3WfD/0Pl2VesE
X9DQ/3YCgz2kN8kFBO3GM9TpWOisvfhZj7qVHqX3jTbV49shoKiK20tRAA8eyZew
vdjd20WdyHM064e8LYtW/JFMBkrihWERi4CvcV71LhcHELVNWf1JXDldvkV3Y7o=
-----END ENCRYPTED PRIVATE KEY-----
";

/// `openssl ec -aes256` of a P-256 key (OpenSSL's legacy encrypted PEM).
const ENCRYPTED_LEGACY: &str = "\
-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-256-CBC,02DB82B6C517200D4B230C0EDE8AF870

UF7xktU7NExsMZ7kVaWRomzqCqfZSlX8QezdR/KhrI7+Y9vhXJ5K4t+KcmzNHj5e
7i5Hz+gZZW/aO7CgaBU7uQ47TGx4H6Cn+i/bjT0jASiY/ekwr7TI18ESNvg+i8CH
YSu5hNS3nvHrbzwWss3bgUcUNboq+ePYwWIqmQsUBP4=
-----END EC PRIVATE KEY-----
";

/// `openssl ecparam -name secp521r1 -genkey -noout`: ring signs with
/// P-256 and P-384 only.
const P521: &str = "\
-----BEGIN EC PRIVATE KEY-----
MIHcAgEBBEIB0GjEsj3RsbQiCAGb+uUsnqbwtIwwFk/CXUmkaGrTX0VnzJWd/g8a
dI3y21u1TqeiNvCFntcGL9bzUnqPLeOZpmmgBwYFK4EEACOhgYkDgYYABAEAkF/A
ojJ7hG32hMKJrLMeaNe4HXzvF7vHTFjV3PvzRmBjQZBYSyp2fXEXKY+i6JmIs3Gi
XaYq1IWjvvxOPy9rtQBiNBmIRW+cGBl4yrCbudarV+mFIJNXeYxWATVDl5wtZzfP
T+x6b7D6iP3mu3Kzwb5V5KjsndRaTjejBU2k8dRhXQ==
-----END EC PRIVATE KEY-----
";
