//! `cargo xtask bench l7`: SLB's HTTP proxy against nginx and HAProxy.
//!
//! One backend (nginx answering `200 "ok"`), reached directly and through
//! each proxy, all in one network namespace on its loopback. wrk keeps 64
//! connections alive and reports requests/s and the 99th percentile
//! latency. Each proxy has one worker (thread or process) and is pinned to
//! the same CPU; wrk and the backend share the other one. The runs are
//! interleaved (direct, SLB, nginx, HAProxy, then again) so that noise
//! spreads over all targets; the median and the range are reported. A run
//! during which other processes on the machine took a noticeable share of
//! a CPU is repeated. Besides requests/s, the CPU time each proxy spends
//! per request is reported: it stays comparable when the client side, not
//! the proxy, is the bottleneck. The section's markdown spells out the
//! whole setup.
#[path = "l7_procs.rs"]
mod procs;
#[path = "l7_wrk.rs"]
mod wrk;

use std::{fmt::Write as _, net::SocketAddr, path::Path, time::Duration};

use self::procs::{version, CpuTimes, Net, Proc, Scratch, Spec};
use super::{Ctx, Section};
use crate::cmd::find_in_path;
use anyhow::{bail, Context, Result};

/// wrk's connections (all kept alive).
const CONNECTIONS: usize = 64;
/// The backend's response body.
const BODY: &str = "ok";
/// Warm-up of each target before the first measurement.
const WARMUP: Duration = Duration::from_secs(2);
/// A run during which processes outside the benchmark took more than this
/// share of a CPU is repeated (at most `RETRIES` times), then kept and
/// counted as disturbed.
const DISTURBED: f64 = 0.05;
const RETRIES: usize = 2;

const BACKEND: &str = "127.0.0.1:8080";
const SLB: &str = "127.0.0.1:8081";
const NGINX: &str = "127.0.0.1:8082";
const HAPROXY: &str = "127.0.0.1:8083";
const SLB_METRICS: &str = "127.0.0.1:9470";

/// Client requests per connection the proxies allow (HAProxy has no such
/// limit): high enough that no proxy closes wrk's connections during a
/// run. SLB's default is 100, nginx's 1000; equal settings keep the
/// comparison about proxying, not about reconnecting.
const REQUESTS_PER_CONNECTION: u32 = 1_000_000;

/// The CPUs: the proxies on one, wrk and the backend on the other.
struct Cpus {
    client: usize,
    proxy: usize,
    count: usize,
}

fn cpus() -> Cpus {
    let count = std::thread::available_parallelism().map_or(1, |n| n.get());
    if count >= 2 {
        Cpus {
            client: 0,
            proxy: 1,
            count,
        }
    } else {
        Cpus {
            client: 0,
            proxy: 0,
            count,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Slb,
    Nginx,
    Haproxy,
}

struct Target {
    kind: Kind,
    label: &'static str,
    addr: SocketAddr,
    runs: Vec<wrk::Run>,
}

/// Everything that runs; dropped (stopped) before the namespace.
struct Servers {
    backend: Proc,
    slb: Proc,
    nginx: Proc,
    haproxy: Proc,
}

impl Servers {
    /// The proxy a target goes through.
    fn proxy(&self, kind: Kind) -> Option<&Proc> {
        match kind {
            Kind::Direct => None,
            Kind::Slb => Some(&self.slb),
            Kind::Nginx => Some(&self.nginx),
            Kind::Haproxy => Some(&self.haproxy),
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        self.backend.check_alive()?;
        self.slb.check_alive()?;
        self.nginx.check_alive()?;
        self.haproxy.check_alive()
    }
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    for p in ["wrk", "nginx", "haproxy", "taskset", "nsenter", "curl"] {
        if find_in_path(p).is_none() {
            bail!("`{p}` is not installed (`cargo xtask setup` installs what the benchmark needs)");
        }
    }
    let nginx_bin = find_in_path("nginx").context("nginx")?;
    let haproxy_bin = find_in_path("haproxy").context("haproxy")?;
    let cpu = cpus();
    let load_before = background_load();

    // Dropped in reverse order: servers, then their files, then the namespace.
    let net = Net::new("l7b")?;
    let scratch = Scratch::new("l7bench")?;
    let mut servers = start_servers(ctx, &net, &scratch, &cpu, &nginx_bin, &haproxy_bin)?;

    let mut targets = vec![
        target(Kind::Direct, "direct (wrk → backend)", BACKEND),
        target(Kind::Slb, "SLB `slb proxy --workers 1`", SLB),
        target(Kind::Nginx, "nginx `worker_processes 1`", NGINX),
        target(Kind::Haproxy, "HAProxy `nbthread 1`", HAPROXY),
    ];
    for t in &targets {
        wrk::run(&net, cpu.client, CONNECTIONS, WARMUP, t.addr)
            .with_context(|| format!("warming up {}", t.label))?;
        servers.check_alive()?;
    }
    let duration = Duration::from_secs(ctx.seconds);
    let mut disturbed = 0;
    for round in 1..=ctx.repeat {
        for t in &mut targets {
            // The least disturbed of at most 1 + RETRIES attempts.
            let mut best: Option<(f64, wrk::Run)> = None;
            for attempt in 0..=RETRIES {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_secs(2));
                }
                let r = measure(&net, &cpu, &servers, t, duration)?;
                servers.check_alive()?;
                let other = other_work(&cpu, t.kind, &r);
                report(ctx, &cpu, round, t, &r, other);
                if best.as_ref().is_none_or(|(o, _)| other < *o) {
                    best = Some((other, r));
                }
                if other <= DISTURBED {
                    break;
                }
                println!("    other work on the machine took {}", fmt_pct(other));
            }
            let (other, r) = best.expect("at least one attempt");
            if other > DISTURBED {
                disturbed += 1;
            }
            t.runs.push(r);
        }
    }
    let setup = Setup::probe(ctx, &nginx_bin, &haproxy_bin);
    drop(servers);
    drop(scratch);
    drop(net);
    let load = [load_before, background_load()];
    Ok(Section {
        title: "L7 proxy: SLB vs nginx vs HAProxy (wrk, keep-alive)".into(),
        markdown: render(ctx, &cpu, &targets, &setup, load, disturbed),
    })
}

/// One wrk run against `t`, with the CPU time of everything involved:
/// the measured proxy's, and what processes outside the benchmark took
/// of each CPU (busy time minus the benchmark's own processes').
fn measure(
    net: &Net,
    cpu: &Cpus,
    servers: &Servers,
    t: &Target,
    duration: Duration,
) -> Result<wrk::Run> {
    let all = [
        &servers.backend,
        &servers.slb,
        &servers.nginx,
        &servers.haproxy,
    ];
    let times = || -> Vec<(f64, f64)> { all.iter().map(|p| p.cpu_time()).collect() };
    let measured = servers.proxy(t.kind).map(|p| p.name.clone());
    let (cpu0, procs0) = (CpuTimes::now(), times());
    let mut r = wrk::run(net, cpu.client, CONNECTIONS, duration, t.addr)
        .with_context(|| format!("measuring {}", t.label))?;
    let (cpu1, procs1) = (CpuTimes::now(), times());
    let used: Vec<(f64, f64)> = procs0
        .iter()
        .zip(&procs1)
        .map(|(a, b)| (b.0 - a.0, b.1 - a.1))
        .collect();
    for (p, u) in all.iter().zip(&used) {
        if Some(&p.name) == measured.as_ref() {
            r.cpu_time = *u;
        }
    }
    // The backend and wrk run on the client CPU, the proxies on the other.
    let backend = used[0].0 + used[0].1;
    let proxies: f64 = used[1..].iter().map(|u| u.0 + u.1).sum();
    r.busy = (0..cpu.count).map(|c| cpu1.busy_since(&cpu0, c)).collect();
    r.foreign = (0..cpu.count)
        .map(|c| {
            let (busy, elapsed) = cpu1.seconds_since(&cpu0, c);
            let mut ours = 0.0;
            if c == cpu.client {
                ours += backend + r.wrk_cpu;
            }
            if c == cpu.proxy {
                ours += proxies;
            }
            ((busy - ours) / elapsed).max(0.0)
        })
        .collect();
    Ok(r)
}

/// The largest share of a CPU that other processes took during `r`, among
/// the CPUs the target uses (direct runs leave the proxy CPU idle).
fn other_work(cpu: &Cpus, kind: Kind, r: &wrk::Run) -> f64 {
    r.foreign
        .iter()
        .enumerate()
        .filter(|&(c, _)| c == cpu.client || (c == cpu.proxy && kind != Kind::Direct))
        .fold(0.0f64, |a, (_, &b)| a.max(b))
}

fn report(ctx: &Ctx, cpu: &Cpus, round: usize, t: &Target, r: &wrk::Run, other: f64) {
    let per_request = match t.kind {
        Kind::Direct => "–".into(),
        _ => format!(
            "{:.1} µs",
            (r.cpu_time.0 + r.cpu_time.1) * 1e6 / r.requests.max(1) as f64
        ),
    };
    println!(
        "l7 {round}/{}: {:<28} {:>8.0} requests/s  p99 {:>9}  proxy CPU/request {per_request:>8}, busy {:>4}  client CPU {:>4}  other work {:>4}  errors {}",
        ctx.repeat,
        t.label,
        r.rps,
        fmt_us(r.p99_us),
        fmt_pct(r.busy.get(cpu.proxy).copied().unwrap_or(f64::NAN)),
        fmt_pct(r.busy.get(cpu.client).copied().unwrap_or(f64::NAN)),
        fmt_pct(other),
        r.errors
    );
}

fn target(kind: Kind, label: &'static str, addr: &str) -> Target {
    Target {
        kind,
        label,
        addr: addr.parse().expect("constant address"),
        runs: Vec::new(),
    }
}

fn start_servers(
    ctx: &Ctx,
    net: &Net,
    scratch: &Scratch,
    cpu: &Cpus,
    nginx_bin: &Path,
    haproxy_bin: &Path,
) -> Result<Servers> {
    let up = Duration::from_secs(10);
    for d in ["backend-tmp", "nginx-tmp"] {
        std::fs::create_dir_all(scratch.path(d))?;
    }
    let nginx_args = |name: &str, conf: &Path| -> Vec<String> {
        vec![
            "-p".into(),
            scratch.dir.display().to_string(),
            "-e".into(),
            scratch
                .path(&format!("{name}-error.log"))
                .display()
                .to_string(),
            "-c".into(),
            conf.display().to_string(),
            "-g".into(),
            "daemon off;".into(),
        ]
    };

    let conf = scratch.write("backend.conf", &backend_conf(&scratch.dir))?;
    let mut backend = Proc::start(
        net,
        scratch,
        Spec {
            name: "backend",
            cpu: cpu.client,
            program: nginx_bin,
            args: nginx_args("backend", &conf),
            env: Vec::new(),
        },
    )?;
    backend.wait_serving(net, cpu.client, BACKEND.parse()?, BODY, up)?;

    let conf = scratch.write("slb.toml", &slb_conf(&scratch.dir))?;
    let mut slb = Proc::start(
        net,
        scratch,
        Spec {
            name: "slb",
            cpu: cpu.proxy,
            program: &ctx.slb,
            args: vec![
                "proxy".into(),
                "-c".into(),
                conf.display().to_string(),
                "--workers".into(),
                "1".into(),
            ],
            // No access log (it is an info-level event): nginx and HAProxy
            // run without one too.
            env: vec![("RUST_LOG", "warn")],
        },
    )?;
    slb.wait_serving(net, cpu.client, SLB.parse()?, BODY, up)?;

    let conf = scratch.write("nginx.conf", &nginx_proxy_conf(&scratch.dir))?;
    let mut nginx = Proc::start(
        net,
        scratch,
        Spec {
            name: "nginx",
            cpu: cpu.proxy,
            program: nginx_bin,
            args: nginx_args("nginx", &conf),
            env: Vec::new(),
        },
    )?;
    nginx.wait_serving(net, cpu.client, NGINX.parse()?, BODY, up)?;

    let conf = scratch.write("haproxy.cfg", &haproxy_conf())?;
    let mut haproxy = Proc::start(
        net,
        scratch,
        Spec {
            name: "haproxy",
            cpu: cpu.proxy,
            program: haproxy_bin,
            args: vec!["-f".into(), conf.display().to_string(), "-db".into()],
            env: Vec::new(),
        },
    )?;
    haproxy.wait_serving(net, cpu.client, HAPROXY.parse()?, BODY, up)?;

    Ok(Servers {
        backend,
        slb,
        nginx,
        haproxy,
    })
}

/// nginx's temporary directories (unused here, but nginx creates them at
/// start) and pid file go to the scratch directory.
fn nginx_common(dir: &Path, name: &str) -> String {
    let tmp = dir.join(format!("{name}-tmp"));
    let tmp = tmp.display();
    format!(
        "worker_processes 1;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
",
        dir = dir.display()
    ) + &format!(
        "http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests {REQUESTS_PER_CONNECTION};
    keepalive_timeout 300s;
"
    )
}

fn backend_conf(dir: &Path) -> String {
    nginx_common(dir, "backend")
        + &format!(
            "    server {{
        listen {BACKEND} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 \"{BODY}\";
        }}
    }}
}}
"
        )
}

/// The reverse proxy: upstream keep-alive, and the forwarding headers SLB
/// always sets (X-Forwarded-For/-Proto/-Port, X-Real-IP), so that all
/// three proxies do the same work.
fn nginx_proxy_conf(dir: &Path) -> String {
    nginx_common(dir, "nginx")
        + &format!(
            "    upstream backend {{
        server {BACKEND};
        keepalive {CONNECTIONS};
        keepalive_requests {REQUESTS_PER_CONNECTION};
        keepalive_timeout 300s;
    }}
    server {{
        listen {NGINX} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
}}
"
        )
}

/// One thread, connection reuse towards the backend, no log, the same
/// forwarding headers as SLB.
fn haproxy_conf() -> String {
    format!(
        "global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
    http-reuse always

frontend bench
    bind {HAPROXY}
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Port %[dst_port]
    default_backend backend

backend backend
    server b1 {BACKEND}
"
    )
}

/// SLB: one http listener, health checks off (nginx and HAProxy check
/// nothing either), the same per-connection request limit.
fn slb_conf(dir: &Path) -> String {
    let (vip, port) = SLB.split_once(':').expect("constant address");
    let (bip, bport) = BACKEND.split_once(':').expect("constant address");
    format!(
        "[agent]
metrics_listen = \"{SLB_METRICS}\"
control_socket = \"{}\"

[[listener]]
name = \"bench\"
vip = \"{vip}\"
port = {port}
protocol = \"http\"
health_check = {{ enabled = false }}
max_requests_per_connection = {REQUESTS_PER_CONNECTION}
client_idle_timeout = \"300s\"

  [[listener.backend]]
  address = \"{bip}\"
  port = {bport}
",
        dir.join("slb.sock").display()
    )
}

/// Versions, for the record.
struct Setup {
    nginx: String,
    haproxy: String,
    wrk: String,
    slb: String,
}

impl Setup {
    fn probe(ctx: &Ctx, nginx: &Path, haproxy: &Path) -> Setup {
        let path = |p: &Path| p.display().to_string();
        // "nginx version: nginx/1.22.1", "HAProxy version 2.6.12 2023/… -
        // https://…", "wrk 4.1.0 [epoll] Copyright (C) …".
        let nginx = version(&path(nginx), "-v");
        let haproxy = version(&path(haproxy), "-v");
        let wrk = version("wrk", "-v");
        Setup {
            nginx: nginx.trim_start_matches("nginx version: ").to_owned(),
            haproxy: haproxy
                .split(" - ")
                .next()
                .unwrap_or(&haproxy)
                .trim_start_matches("HAProxy version ")
                .to_owned(),
            wrk: wrk.split(" Copyright").next().unwrap_or(&wrk).to_owned(),
            slb: version(&path(&ctx.slb), "--version"),
        }
    }
}

/// Busy fraction of each CPU over one second, before anything of the
/// benchmark runs (or after): what else the machine is doing.
fn background_load() -> Vec<f64> {
    let before = CpuTimes::now();
    std::thread::sleep(Duration::from_secs(1));
    let after = CpuTimes::now();
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).map(|c| after.busy_since(&before, c)).collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// 123456.7 → "123,457".
fn fmt_count(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_pct(f: f64) -> String {
    if f.is_finite() {
        format!("{:.0}%", 100.0 * f)
    } else {
        "–".into()
    }
}

/// Medians of one target.
struct Summary {
    rps: f64,
    rps_range: (f64, f64),
    p99: f64,
    p99_range: (f64, f64),
    proxy_busy: f64,
    client_busy: f64,
    /// CPU time of the proxy process per request, microseconds: user, system.
    user_us: f64,
    sys_us: f64,
    /// Share of the busier CPU (of those used) taken by processes outside
    /// the benchmark.
    foreign: f64,
    errors: u64,
}

impl Summary {
    fn cpu_us(&self) -> f64 {
        self.user_us + self.sys_us
    }
}

fn summarize(t: &Target, cpu: &Cpus) -> Summary {
    let of = |f: &dyn Fn(&wrk::Run) -> f64| -> Vec<f64> { t.runs.iter().map(f).collect() };
    let rps = of(&|r| r.rps);
    let p99 = of(&|r| r.p99_us);
    let busy = |c: usize| of(&|r| r.busy.get(c).copied().unwrap_or(f64::NAN));
    let per_request = |x: f64, r: &wrk::Run| x * 1e6 / r.requests.max(1) as f64;
    Summary {
        rps: median(&rps),
        rps_range: min_max(&rps),
        p99: median(&p99),
        p99_range: min_max(&p99),
        proxy_busy: median(&busy(cpu.proxy)),
        client_busy: median(&busy(cpu.client)),
        user_us: median(&of(&|r| per_request(r.cpu_time.0, r))),
        sys_us: median(&of(&|r| per_request(r.cpu_time.1, r))),
        foreign: median(&of(&|r| other_work(cpu, t.kind, r))),
        errors: t.runs.iter().map(|r| r.errors).sum(),
    }
}

/// "slb vs nginx: 1.25x requests/s, p99 0.90x" and whether it meets the
/// target (≥ 1.2x requests/s at equal or lower p99).
fn ratio(name: &str, slb: &Summary, other: &Summary) -> (String, bool) {
    let r = slb.rps / other.rps;
    let p = slb.p99 / other.p99;
    let met = r >= 1.2 && p <= 1.0;
    (
        format!("slb vs {name}: {r:.2}x requests/s, p99 {p:.2}x"),
        met,
    )
}

fn fmt_load(load: &[f64]) -> String {
    load.iter()
        .enumerate()
        .map(|(i, l)| format!("CPU {i} {}", fmt_pct(*l)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(
    ctx: &Ctx,
    cpu: &Cpus,
    targets: &[Target],
    setup: &Setup,
    load: [Vec<f64>; 2],
    disturbed: usize,
) -> String {
    let sums: Vec<(&Target, Summary)> = targets.iter().map(|t| (t, summarize(t, cpu))).collect();
    let get = |k: Kind| {
        &sums
            .iter()
            .find(|(t, _)| t.kind == k)
            .expect("every kind measured")
            .1
    };
    let (slb, nginx, haproxy, direct) = (
        get(Kind::Slb),
        get(Kind::Nginx),
        get(Kind::Haproxy),
        get(Kind::Direct),
    );

    let mut md = String::new();
    let _ = writeln!(
        md,
        "wrk, {CONNECTIONS} keep-alive connections, `GET /` → `200 \"{BODY}\"`; {} runs of {} s per target, interleaved; median [min–max]. \
         Proxy CPU/request: user + system CPU time of the proxy process (softirq work done in its context included) per request.\n",
        ctx.repeat, ctx.seconds
    );
    md.push_str("| target | requests/s | p99 latency | proxy CPU/request (user + sys) | proxy CPU busy | client CPU busy | other work | errors |\n");
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (t, s) in &sums {
        let proxied = t.kind != Kind::Direct;
        let _ = writeln!(
            md,
            "| {} | {} [{}–{}] | {} [{}–{}] | {} | {} | {} | {} | {} |",
            t.label,
            fmt_count(s.rps),
            fmt_count(s.rps_range.0),
            fmt_count(s.rps_range.1),
            fmt_us(s.p99),
            fmt_us(s.p99_range.0),
            fmt_us(s.p99_range.1),
            if proxied {
                format!("{:.1} µs ({:.1} + {:.1})", s.cpu_us(), s.user_us, s.sys_us)
            } else {
                "–".into()
            },
            if proxied {
                fmt_pct(s.proxy_busy)
            } else {
                "idle".into()
            },
            fmt_pct(s.client_busy),
            fmt_pct(s.foreign),
            s.errors,
        );
    }
    md.push('\n');
    let (vs_nginx, ok_nginx) = ratio("nginx", slb, nginx);
    let (vs_haproxy, ok_haproxy) = ratio("haproxy", slb, haproxy);
    let _ = writeln!(md, "- {vs_nginx}");
    let _ = writeln!(md, "- {vs_haproxy}");
    let _ = writeln!(
        md,
        "- proxy CPU per request: slb {:.2}x nginx's, {:.2}x haproxy's (user: {:.2}x, {:.2}x; system: {:.2}x, {:.2}x)",
        slb.cpu_us() / nginx.cpu_us(),
        slb.cpu_us() / haproxy.cpu_us(),
        slb.user_us / nginx.user_us,
        slb.user_us / haproxy.user_us,
        slb.sys_us / nginx.sys_us,
        slb.sys_us / haproxy.sys_us,
    );
    let _ = writeln!(
        md,
        "- requests/s through each proxy vs direct: slb {:.2}x, nginx {:.2}x, haproxy {:.2}x",
        slb.rps / direct.rps,
        nginx.rps / direct.rps,
        haproxy.rps / direct.rps
    );
    let errors: u64 = sums.iter().map(|(_, s)| s.errors).sum();
    let verdict = match (ok_nginx, ok_haproxy) {
        (true, true) => "**met**",
        (false, false) => "**not met** (neither against nginx nor against HAProxy)",
        (true, false) => "**not met** (met against nginx, not against HAProxy)",
        (false, true) => "**not met** (met against HAProxy, not against nginx)",
    };
    let _ = writeln!(
        md,
        "\nTarget (SLB ≥ 1.2x nginx and ≥ 1.2x HAProxy requests/s at equal or lower p99): {verdict}.{}",
        if errors > 0 {
            format!(" Some runs had errors ({errors} socket errors or non-2xx responses): their numbers are suspect.")
        } else {
            String::new()
        }
    );
    let ceiling = direct.rps / nginx.rps.max(haproxy.rps);
    if ceiling < 1.2 {
        let _ = writeln!(
            md,
            "\nThe client side caps what any proxy can show here: direct is only {ceiling:.2}x the faster of nginx and HAProxy, so 1.2x their requests/s cannot be measured on this machine. \
             The CPU-time equivalent of the target, ≤ {:.2}x their proxy CPU per request, is {}: slb uses {:.2}x nginx's and {:.2}x HAProxy's.",
            1.0 / 1.2,
            if slb.cpu_us() * 1.2 <= nginx.cpu_us() && slb.cpu_us() * 1.2 <= haproxy.cpu_us() {
                "met"
            } else {
                "not met"
            },
            slb.cpu_us() / nginx.cpu_us(),
            slb.cpu_us() / haproxy.cpu_us(),
        );
    }
    if cpu.proxy == cpu.client {
        md.push_str(
            "\n**One CPU only: proxies, wrk and backend share it; the numbers say little.**\n",
        );
    }
    let _ = writeln!(
        md,
        "\nOther work: the largest share of a CPU used by the run that processes outside the benchmark took meanwhile (the CPU's busy time minus the CPU time of the benchmark's processes on it); runs above {} were repeated (up to {RETRIES} times, keeping the least disturbed){}. Load with nothing of the benchmark running, before: {}; after: {}.",
        fmt_pct(DISTURBED),
        if disturbed > 0 {
            format!(", **{disturbed} run(s) stayed disturbed: their numbers are noisy**")
        } else {
            String::new()
        },
        fmt_load(&load[0]),
        fmt_load(&load[1]),
    );

    let _ = write!(
        md,
        "
Setup:

- Everything in one network namespace, over its loopback (127.0.0.1).
- Backend: {nginx_v}, `worker_processes 1`, `return 200 \"{BODY}\"` (text/plain, {len}-byte body), access log off, `keepalive_requests {REQUESTS_PER_CONNECTION}`.
- wrk: {wrk_v}; `wrk -t1 -c{CONNECTIONS} -d{secs}s --latency`; {warm} s warm-up per target before the first run.
- CPUs ({n} here): each proxy pinned (`taskset -c {p}`) to CPU {p}; wrk and the backend to CPU {c}. All proxies stay up for the whole run; only the measured one gets traffic. \"Direct\" is wrk → backend with CPU {p} idle: about the most the client side can drive. A proxy that keeps CPU {p} below 100% busy is held back by the client side (or by latency); its CPU per request is then the fairer comparison.
- SLB: {slb_v}, `slb proxy -c slb.toml --workers 1` (one tokio worker thread), one http listener, health checks off, `max_requests_per_connection = {REQUESTS_PER_CONNECTION}` (default 100), `client_idle_timeout = \"300s\"`, `RUST_LOG=warn` so that the access log (`slb::access`, info) is off like the others'. SLB always adds X-Forwarded-For/-Proto/-Port and X-Real-IP.
- nginx: {nginx_v}, `worker_processes 1`, `upstream` with `keepalive {CONNECTIONS}`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, the same four forwarding headers, `keepalive_requests {REQUESTS_PER_CONNECTION}` on both sides, access log off.
- HAProxy: {haproxy_v}, `nbthread 1`, mode http, `http-reuse always`, `option forwardfor` and the other three headers, no log, no health checks.
",
        nginx_v = setup.nginx,
        len = BODY.len(),
        wrk_v = setup.wrk,
        secs = ctx.seconds,
        warm = WARMUP.as_secs(),
        n = cpu.count,
        p = cpu.proxy,
        c = cpu.client,
        slb_v = setup.slb,
        haproxy_v = setup.haproxy,
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[3.0, 1.0, 2.0]), (1.0, 3.0));
        assert_eq!(fmt_count(1234567.4), "1,234,567");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_us(740.0), "740 µs");
        assert_eq!(fmt_us(1520.0), "1.52 ms");
    }

    #[test]
    fn configs_name_the_backend() {
        let dir = Path::new("/tmp/x");
        assert!(slb_conf(dir).contains("port = 8080"));
        assert!(nginx_proxy_conf(dir).contains("keepalive 64;"));
        assert!(haproxy_conf().contains("server b1 127.0.0.1:8080"));
        assert!(backend_conf(dir).contains("return 200 \"ok\";"));
    }
}
