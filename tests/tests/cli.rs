//! The `slb` command line against a stand-in agent on a control socket:
//! exit codes, where output goes, and what error messages say. No root
//! powers or namespaces needed (one test drops to `nobody`).
use slb::control::Response;
use slb::status::{
    BackendState, BackendStatus, Counters, GlobalCounters, ListenerStatus, Snapshot,
};
use slb_tests::{agent::scratch_dir, slb_bin};
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::PermissionsExt,
        net::UnixListener,
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

/// A directory for the socket, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        Dir(scratch_dir(tag).unwrap())
    }
    fn sock(&self) -> PathBuf {
        self.0.join("control.sock")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Answers one connection on `path` with `answer` (after reading the
/// request line).
fn one_answer(path: &Path, answer: Response) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        let mut line = String::new();
        let mut r = BufReader::new(&s);
        let _ = r.read_line(&mut line);
        let mut out = serde_json::to_vec(&answer).unwrap();
        out.push(b'\n');
        let _ = (&s).write_all(&out);
    })
}

/// A status with `n` listeners of one backend each.
fn big_status(n: usize) -> Snapshot {
    let listeners = (0..n)
        .map(|i| ListenerStatus {
            name: format!("listener-{i}"),
            vip: "10.0.0.10".into(),
            port: (i % 60000 + 1) as u16,
            protocol: "tcp".into(),
            scheduler: "wrr".into(),
            mode: "fullnat".into(),
            counters: Counters::default(),
            requests: None,
            backends: vec![BackendStatus {
                address: "10.0.1.2:8080".into(),
                weight: 100,
                backup: false,
                state: BackendState::Up,
                since: None,
                reason: None,
                active_flows: 0,
                counters: Counters::default(),
            }],
        })
        .collect();
    Snapshot {
        generation: 1,
        listeners,
        global: GlobalCounters::default(),
        flows: 0,
    }
}

fn slb(args: &[&str]) -> Output {
    Command::new(slb_bin()).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `slb status | head`: the reader goes away early. The CLI must stop
/// quietly, not panic with a backtrace.
#[test]
fn output_into_a_closed_pipe_is_not_a_crash() {
    for json in [false, true] {
        let d = Dir::new("clipipe");
        let server = one_answer(&d.sock(), Response::Status(big_status(5000)));
        let sock = d.sock();
        let mut args = vec!["status", "--control-socket", sock.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let mut child = Command::new(slb_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 100];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        // The pipe's read end is closed here, with most still unwritten.
        let out = child.wait_with_output().unwrap();
        server.join().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "json={json}: {err}");
        assert_eq!(out.status.signal(), None, "json={json}: {err}");
        assert_eq!(out.status.code(), Some(0), "json={json}: {err}");
    }
}

#[test]
fn errors_say_what_is_wrong_on_stderr_with_a_failure_exit() {
    let d = Dir::new("clierr");
    let sock = d.sock();
    let s = sock.to_str().unwrap();

    // No socket: no agent.
    let o = slb(&["status", "--control-socket", s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("no agent"), "{}", stderr(&o));

    // A socket nothing answers on: left by an agent that stopped.
    drop(UnixListener::bind(&sock).unwrap());
    let o = slb(&["status", "--control-socket", s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nothing answers"), "{}", stderr(&o));
    std::fs::remove_file(&sock).unwrap();

    // The agent refuses: its reasons, on stderr.
    let server = one_answer(
        &sock,
        Response::Error {
            errors: vec!["listener[0].port: must be 1..=65535".into()],
        },
    );
    let o = slb(&["reload", "--control-socket", s]);
    server.join().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("listener[0].port: must be 1..=65535"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(&sock).unwrap();

    // A configuration file that is not there.
    let missing = d.0.join("missing.toml");
    let o = slb(&["status", "-c", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
}

/// `--control-socket` naming a file that is not a socket (the
/// configuration file, a directory: an easy slip) is said to be that, not
/// taken for a socket left by a stopped agent, which would invite the
/// operator to delete it.
#[test]
fn a_control_socket_path_that_is_no_socket_is_named_so() {
    let d = Dir::new("clinosock");
    let file = d.0.join("slb.toml");
    std::fs::write(&file, "[agent]\n").unwrap();
    for path in [&file, &d.0] {
        let o = slb(&["status", "--control-socket", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(err.contains("not a socket"), "{err}");
        assert!(!err.contains("left from one that stopped"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "[agent]\n");
}

/// The socket is the agent's user's only (0600): another user is told
/// so, not asked whether the agent runs.
#[test]
fn permission_denied_says_whose_socket_it_is() {
    let d = Dir::new("cliperm");
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.sock();
    let _l = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = Command::new(slb_bin())
        .args(["status", "--control-socket", sock.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("root"), "{err}");
    assert!(!err.contains("is `slb run` running"), "{err}");
}

/// `slb validate` prints every error of a file at once (SPEC §1): an https
/// listener without a certificate and a `wlc` listener with more backends
/// than the program compares are reported together with the file's other
/// errors, not only once those are fixed.
#[test]
fn validate_prints_every_error_at_once() {
    let d = Dir::new("clivalidate");
    let mut text = String::from(
        "[agent]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n\
         [[listener]]\nname = \"secure\"\nvip = \"127.0.0.1\"\nport = 8443\nprotocol = \"https\"\n\
         health_check = { enabled = false }\n\
         [[listener.backend]]\naddress = \"127.0.0.1\"\nport = 9000\n\
         [[listener]]\nname = \"heavy\"\nvip = \"10.0.0.10\"\nport = 80\nscheduler = \"wlc\"\n",
    );
    for i in 0..65 {
        text.push_str(&format!(
            "[[listener.backend]]\naddress = \"10.0.1.{}\"\nport = 8080\n",
            i + 1
        ));
    }
    text.push_str(
        "[[listener]]\nname = \"web\"\nvip = \"10.0.0.11\"\nport = 80\n\
         [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 8080\nweight = 150\n",
    );
    let file = d.0.join("slb.toml");
    std::fs::write(&file, text).unwrap();
    let o = slb(&["validate", "-c", file.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for path in [
        "listener[0].certificate: ",
        "listener[1].scheduler: wlc compares every backend",
        "listener[2].backend[0].weight: must be 0..=100",
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(path)),
            "no {path:?} in:\n{err}"
        );
    }
    assert!(err.contains(": 3 error(s)"), "{err}");
}

/// The verdict on a valid file counts its listeners in plain English.
#[test]
fn validate_verdict_counts_listeners() {
    let d = Dir::new("cliverdict");
    let one = "[agent]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n\
               [[listener]]\nname = \"web\"\nvip = \"10.0.0.10\"\nport = 80\n\
               [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 8080\n";
    let two = format!(
        "{one}[[listener]]\nname = \"dns\"\nvip = \"10.0.0.10\"\nport = 53\nprotocol = \"udp\"\n\
         [[listener.backend]]\naddress = \"10.0.1.1\"\nport = 53\n"
    );
    for (text, verdict) in [
        (one.to_string(), "ok (1 listener)"),
        (two, "ok (2 listeners)"),
    ] {
        let file = d.0.join("slb.toml");
        std::fs::write(&file, text).unwrap();
        let o = slb(&["validate", "-c", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.trim_end().ends_with(verdict), "{err}");
    }
}

/// A certificate outside its validity period loads (as nginx loads it: a
/// reload must not take a site down over a late renewal), but `slb
/// validate` warns, naming the key path, the file and the date, so that
/// an operator sees it before clients refuse the certificate.
#[test]
fn validate_warns_of_an_expired_or_not_yet_valid_certificate() {
    let d = Dir::new("clicertdates");
    let mut text = String::from(
        "[agent]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n\
         [[listener]]\nname = \"secure\"\nvip = \"127.0.0.1\"\nport = 8443\nprotocol = \"https\"\n\
         health_check = { enabled = false }\n\
         [[listener.backend]]\naddress = \"127.0.0.1\"\nport = 9000\n",
    );
    let mut files = Vec::new();
    for (name, from, to) in [
        ("current", (2020, 1, 1), (4000, 1, 1)),
        ("expired", (2020, 1, 1), (2020, 2, 1)),
        ("future", (3999, 1, 1), (4000, 1, 1)),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = params.self_signed(&key).unwrap();
        let (crt, k) = (
            d.0.join(format!("{name}.crt")),
            d.0.join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        text.push_str(&format!(
            "[[listener.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n",
            crt.display(),
            k.display()
        ));
        files.push(crt);
    }
    let file = d.0.join("slb.toml");
    std::fs::write(&file, text).unwrap();
    let o = slb(&["validate", "-c", file.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let expired = format!(
        "warning: listener[0].certificate[1].cert: {}: the certificate expired on Feb  1 00:00:00 2020 +00:00",
        files[1].display()
    );
    let future = format!(
        "warning: listener[0].certificate[2].cert: {}: the certificate is not valid before Jan  1 00:00:00 3999 +00:00",
        files[2].display()
    );
    for want in [expired, future] {
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "no {want:?} in:\n{err}"
        );
    }
    assert!(!err.contains("certificate[0]"), "{err}");
    assert!(err.trim_end().ends_with("ok (1 listener)"), "{err}");
}

/// What rustls warns of when a client sends an IP address as its SNI
/// (which some clients do): a line per connection that any client can
/// provoke.
const SNI_WARNING: &str = "Illegal SNI extension";

/// `slb proxy` does not log the TLS library's warnings about what a
/// client did wrong at the default level: any client could write a line
/// per connection into the log. With `rustls=warn` asked for, the same
/// client's line appears (the stimulus works).
#[test]
fn tls_client_misbehaviour_stays_out_of_the_default_log() {
    let d = Dir::new("clitlslog");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["aa.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (crt, k) = (d.0.join("aa.crt"), d.0.join("aa.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    // A ClientHello for "aa.test" with the name swapped for an IP address
    // of the same length: the lengths in the message stay right.
    let hello = {
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("aa.test").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        let at = out
            .windows(7)
            .position(|w| w == b"aa.test")
            .expect("the SNI is in the hello");
        out[at..at + 7].copy_from_slice(b"1.2.3.4");
        out
    };
    for (rust_log, warned) in [(None, false), (Some("info,rustls=warn"), true)] {
        // Free ports and a socket of its own, not the defaults (9470,
        // /run/slb/control.sock), which an agent on the host may hold.
        let (port, metrics) = (free_port(), free_port());
        let file = d.0.join("slb.toml");
        std::fs::write(
            &file,
            format!(
                "[agent]\nprobe_source = \"100.64.0.1\"\nlocal_addresses = [\"100.64.0.10\"]\n\
                 metrics_listen = \"127.0.0.1:{metrics}\"\ncontrol_socket = \"{}\"\n\
                 [[listener]]\nname = \"secure\"\nvip = \"127.0.0.1\"\nport = {port}\n\
                 protocol = \"https\"\nhealth_check = {{ enabled = false }}\n\
                 [[listener.certificate]]\ncert = \"{}\"\nkey = \"{}\"\n\
                 [[listener.backend]]\naddress = \"127.0.0.1\"\nport = 9\n",
                d.sock().display(),
                crt.display(),
                k.display()
            ),
        )
        .unwrap();
        let log = d.0.join("proxy.log");
        let mut cmd = Command::new(slb_bin());
        cmd.args(["proxy", "-c", file.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let mut proxy = cmd.spawn().unwrap();
        let started = std::time::Instant::now();
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("the proxy does not listen: {e}"),
            }
        };
        s.write_all(&hello).unwrap();
        // The server answers (its hello, with the first certificate): the
        // hello has been read and judged.
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf[0], 22, "a handshake record: {buf:?}");
        drop(s);
        std::thread::sleep(std::time::Duration::from_millis(200));
        proxy.kill().unwrap();
        proxy.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text.contains(SNI_WARNING),
            warned,
            "RUST_LOG={rust_log:?}:\n{text}"
        );
    }
}

/// `slb --version` names the map layout, so that an operator can tell
/// before an upgrade whether the new build adopts the running dataplane.
#[test]
fn version_names_the_map_layout() {
    let o = slb(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    let want = format!("(map layout {})", slb_common::limits::LAYOUT_VERSION);
    assert!(
        out.starts_with("slb ") && out.trim_end().ends_with(&want),
        "{out}"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on (just now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Under systemd (`Type=notify`, as in the example unit) the agent says
/// READY=1 on `$NOTIFY_SOCKET` once it serves, so `systemctl start` and
/// `restart` report a start that failed instead of success at once.
#[test]
fn the_agent_tells_systemd_when_it_is_ready() {
    let d = Dir::new("clinotify");
    let (port, metrics) = (free_port(), free_port());
    let file = d.0.join("slb.toml");
    std::fs::write(
        &file,
        format!(
            "[agent]\nmetrics_listen = \"127.0.0.1:{metrics}\"\ncontrol_socket = \"{}\"\n\
             [[listener]]\nname = \"web\"\nvip = \"127.0.0.1\"\nport = {port}\n\
             protocol = \"http\"\nhealth_check = {{ enabled = false }}\n\
             [[listener.backend]]\naddress = \"127.0.0.1\"\nport = 9\n",
            d.sock().display()
        ),
    )
    .unwrap();
    let notify = d.0.join("notify.sock");
    let sd = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sd.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut proxy = Command::new(slb_bin())
        .args(["proxy", "-c", file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let got = sd.recv(&mut buf);
    let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = proxy.wait().unwrap();
    let n = got.expect("no notification within 10 s");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.lines().any(|l| l == "READY=1"), "{text:?}");
    assert!(listening, "READY=1 before the listener serves");
    assert!(status.success(), "{status}");
}
