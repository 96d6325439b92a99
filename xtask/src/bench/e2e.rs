//! `cargo xtask bench e2e`: short TCP connections per second and bulk
//! throughput through the VIP, against the same traffic sent directly to a
//! backend and through an nftables DNAT VIP over the same backends, for
//! every forwarding mode this build serves.
//!
//! The standard test bed (client ─ LB ─ 2 backends, veth pairs, network
//! namespaces). Every backend runs nginx (one worker, a tiny static
//! response) on port 80 and `iperf3 -s` on port 5201, both on all
//! addresses. Each repetition runs these phases, in an order rotated per
//! repetition, each phase with the same client commands:
//!
//! * **direct**: no agent, no XDP, no nftables on the LB, which routes like
//!   a plain Linux router; one wrk per backend address at the same time
//!   (threads and connections split, rates summed: the same nginx workers
//!   serve as behind the VIP), iperf3 to backend 1;
//! * **nftables DNAT**: no agent; an `ip` nat table on the LB DNATs the VIP
//!   (port 80: `numgen inc` over the backends, port 5201: `jhash ip saddr`)
//!   and masquerades, the FULLNAT equivalent in netfilter;
//! * **VIP, mode M** for each mode M that `slb validate` accepts: `slb run`
//!   with two listeners on the VIP (port 80 Maglev, port 5201 source hash,
//!   so iperf3's control and data connections reach the same backend).
//!
//! Connections/s: `wrk -t2 -c32 -H "Connection: close"` (one request per
//! TCP connection). Bulk: one iperf3 TCP stream, the receiver's Mbit/s.
//! Ratios are taken within each repetition; the report gives their median
//! and range. Every measurement starts without TIME_WAIT sockets on the
//! backends, after a quiet half second, and is repeated when other work on the
//! machine disturbed it (see `cpu`).
#[path = "e2e_procs.rs"]
mod procs;

use std::{fmt::Write as _, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result};
use slb_tests::{
    config::{render, ListenerSpec},
    topology::{backend4, Topology, VIP4},
    Agent,
};

use super::{
    xdp::{
        cpu::{self, Patience},
        explain_vanished, namespaces, Disturbance, Scratch, DISTURBED, MAX_ATTEMPTS, PATIENCE,
    },
    Ctx, Section,
};
use procs::{Server, WrkResult};

const BACKENDS: usize = 2;
const HTTP_PORT: u16 = 80;
const BULK_PORT: u16 = 5201;
/// Forwarding modes, measured when this build's `slb validate` accepts them.
const MODES: [&str; 3] = ["fullnat", "nat", "dr"];
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 32;
const NFT_TABLE: &str = "slb_bench_dnat";

/// Targets: conn/s ≥ 0.95x direct and ≥ 1.0x nftables DNAT; bulk ≥ 0.95x direct.
const TARGET_CPS_DIRECT: f64 = 0.95;
const TARGET_CPS_NFT: f64 = 1.0;
const TARGET_BULK_DIRECT: f64 = 0.95;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Direct,
    Nft,
    /// Index into MODES.
    Vip(usize),
}

impl Phase {
    fn label(self) -> String {
        match self {
            Phase::Direct => "direct to the backends".into(),
            Phase::Nft => "nftables DNAT VIP".into(),
            Phase::Vip(m) => format!("VIP, slb {}", MODES[m]),
        }
    }
}

/// One phase of one repetition.
struct Run {
    cps: WrkResult,
    mbits: f64,
    /// Share of the machine other work used meanwhile (see `cpu`).
    others: f64,
    /// Measurements made (> 1: repeated because others disturbed it).
    attempts: usize,
    /// wrk requests over all attempts (the agent counts them all).
    all_requests: u64,
}

/// What the agent's counters say about one VIP phase.
struct Check {
    /// New flows (flow-table misses) of the port-80 listener.
    conns: u64,
    /// Client-to-VIP packets the program forwarded on the port-80 listener.
    packets: u64,
    requests: u64,
    bulk_conns: u64,
    via_kernel: u64,
}

fn listeners(mode: &str) -> Vec<ListenerSpec> {
    let forwarding = format!("forwarding = \"{mode}\"");
    let mut web = ListenerSpec::new("web", VIP4.into(), HTTP_PORT, "tcp")
        .scheduler("maglev")
        .extra(&forwarding);
    // Source hash: iperf3's control and data connections must reach the
    // same server. Checks as rare as allowed: each one is a connection the
    // iperf3 server has to turn away.
    let mut bulk = ListenerSpec::new("bulk", VIP4.into(), BULK_PORT, "tcp")
        .scheduler("sh")
        .extra(&forwarding)
        .extra(r#"health_check = { interval = "50s", timeout = "2s" }"#);
    for i in 0..BACKENDS {
        web = web.backend(backend4(i).into(), HTTP_PORT, 1);
        bulk = bulk.backend(backend4(i).into(), BULK_PORT, 1);
    }
    vec![web, bulk]
}

fn config(mode: &str, dir: &Path) -> String {
    render(BACKENDS, dir, &listeners(mode))
}

/// None when this build's `slb validate` accepts a configuration using
/// `mode`; else why the mode is skipped.
fn unsupported(slb: &Path, mode: &str, dir: &Path) -> Result<Option<String>> {
    let file = dir.join(format!("validate-{mode}.toml"));
    std::fs::write(&file, config(mode, dir))?;
    let out = std::process::Command::new(slb)
        .arg("validate")
        .arg("-c")
        .arg(&file)
        .output()
        .with_context(|| format!("running {} validate", slb.display()))?;
    if out.status.success() {
        return Ok(None);
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not supported") {
        Ok(Some("skipped: not supported by this build".into()))
    } else {
        Ok(Some(format!(
            "skipped: `slb validate` rejected the benchmark's configuration: {}",
            text.trim().replace('\n', "; ")
        )))
    }
}

fn nft_ruleset() -> String {
    let map: Vec<String> = (0..BACKENDS)
        .map(|i| format!("{i} : {}", backend4(i)))
        .collect();
    let map = map.join(", ");
    format!(
        "table ip {NFT_TABLE} {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         ip daddr {VIP4} tcp dport {HTTP_PORT} dnat to numgen inc mod {BACKENDS} map {{ {map} }}\n    \
         ip daddr {VIP4} tcp dport {BULK_PORT} dnat to jhash ip saddr mod {BACKENDS} map {{ {map} }}\n  }}\n  \
         chain post {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ct status dnat masquerade\n  }}\n}}\n"
    )
}

/// Direct routing on the backends: the VIP on `lo` (only while a dr phase
/// runs), no ARP answers or announcements for it, loose reverse-path
/// filtering. The LB accepts the replies (source: the VIP) that the
/// backends route through it: rp_filter off there (the namespace default
/// anyway). The sysctls stay set after the phase: they change nothing for
/// the other phases, which never address the VIP to a backend.
fn dr_backends(t: &Topology, on: bool) -> Result<()> {
    let vip = format!("{VIP4}/32");
    for b in &t.backends {
        if on {
            b.ip(&["addr", "add", &vip, "dev", "lo"])?;
            for dev in ["all", "eth0"] {
                b.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
                b.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
                b.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "2")?;
            }
        } else {
            b.ip(&["addr", "del", &vip, "dev", "lo"])?;
        }
    }
    if on {
        t.lb.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        for dev in t.lb_interfaces() {
            t.lb.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
        }
    }
    Ok(())
}

fn measure(t: &Topology, addr: Ipv4Addr, seconds: u64) -> Result<Run> {
    let cps = procs::wrk(
        &t.client,
        addr,
        HTTP_PORT,
        WRK_THREADS,
        WRK_CONNECTIONS,
        seconds,
    )?;
    let mbits = procs::iperf3(&t.client, addr, BULK_PORT, seconds)?;
    Ok(Run::new(cps, mbits))
}

impl Run {
    fn new(cps: WrkResult, mbits: f64) -> Run {
        let all_requests = cps.requests;
        Run {
            cps,
            mbits,
            others: 0.0,
            attempts: 1,
            all_requests,
        }
    }
}

/// Runs the measurement `f` until other work stayed under DISTURBED of the
/// machine meanwhile, at most MAX_ATTEMPTS times; keeps the least disturbed
/// run. Every attempt starts without TIME_WAIT sockets on the backends.
fn guarded(t: &Topology, patience: &mut Patience, f: impl Fn() -> Result<Run>) -> Result<Run> {
    let namespaces = namespaces(t);
    let mut best: Option<Run> = None;
    let mut requests = 0;
    for attempt in 1..=MAX_ATTEMPTS {
        forget_time_wait(t)?;
        patience.wait_quiet(&namespaces, DISTURBED);
        let watch = cpu::Watch::start(&namespaces);
        let mut run = f()?;
        run.others = watch.share();
        run.attempts = attempt;
        requests += run.cps.requests;
        let quiet = run.others <= DISTURBED;
        if !quiet && attempt < MAX_ATTEMPTS && patience.left() {
            println!(
                "     other work used {:.0}% of the machine: measuring again",
                run.others * 100.0
            );
        }
        if best.as_ref().is_none_or(|b| run.others < b.others) {
            best = Some(run);
        }
        if quiet || !patience.left() {
            break;
        }
    }
    let mut run = best.context("no measurement")?;
    run.all_requests = requests;
    Ok(run)
}

/// The direct baseline: the same client load spread over the backends'
/// own addresses (one wrk per backend, the threads and connections split
/// between them, run at the same time and summed), so the same number of
/// nginx workers serve it as behind the VIP. Bulk: backend 1.
fn measure_direct(t: &Topology, seconds: u64) -> Result<Run> {
    let n = BACKENDS as u32;
    let results: Vec<Result<WrkResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..BACKENDS)
            .map(|i| {
                s.spawn(move || {
                    procs::wrk(
                        &t.client,
                        backend4(i),
                        HTTP_PORT,
                        (WRK_THREADS / n).max(1),
                        WRK_CONNECTIONS / n,
                        seconds,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("wrk thread panicked")))
            })
            .collect()
    });
    let mut cps = WrkResult {
        per_second: 0.0,
        requests: 0,
        errors: 0,
    };
    for r in results {
        let r = r?;
        cps.per_second += r.per_second;
        cps.requests += r.requests;
        cps.errors += r.errors;
    }
    let mbits = procs::iperf3(&t.client, backend4(0), BULK_PORT, seconds)?;
    Ok(Run::new(cps, mbits))
}

/// Forgets the backends' TIME_WAIT sockets. Phases reach the backends with
/// the same client ports but different initial sequence numbers and
/// timestamp offsets (those hash the address the client connects to: a
/// backend or the VIP), so a TIME_WAIT entry left by one phase turns away a
/// SYN of the next one (challenge ACK, client RST, SYN retransmitted after
/// 1 s) and would charge that phase for its predecessor.
fn forget_time_wait(t: &Topology) -> Result<()> {
    for b in &t.backends {
        b.exec("ss", &["-K", "-H", "-t", "state", "time-wait"])?;
    }
    Ok(())
}

fn phase(
    ctx: &Ctx,
    t: &Topology,
    p: Phase,
    scratch: &Path,
    patience: &mut Patience,
) -> Result<(Run, Option<Check>)> {
    match p {
        Phase::Direct => Ok((
            guarded(t, patience, || measure_direct(t, ctx.seconds))?,
            None,
        )),
        Phase::Nft => {
            let file = scratch.join("dnat.nft");
            std::fs::write(&file, nft_ruleset())?;
            t.lb.exec("nft", &["-f", &file.to_string_lossy()])?;
            let run = guarded(t, patience, || measure(t, VIP4, ctx.seconds));
            let removed = t.lb.exec("nft", &["delete", "table", "ip", NFT_TABLE]);
            let run = run?;
            removed?;
            Ok((run, None))
        }
        Phase::Vip(m) => {
            let mode = MODES[m];
            if mode == "dr" {
                dr_backends(t, true)?;
            }
            let result = (|| -> Result<(Run, Option<Check>)> {
                let mut agent = Agent::start(&t.lb, "e2e", |dir| config(mode, dir))
                    .with_context(|| format!("starting slb ({mode})"))?;
                for i in 0..BACKENDS {
                    agent.wait_backend_state(
                        "web",
                        &format!("{}:{HTTP_PORT}", backend4(i)),
                        "up",
                        Duration::from_secs(15),
                    )?;
                }
                let run = guarded(t, patience, || measure(t, VIP4, ctx.seconds))?;
                let s = agent.status()?;
                macro_rules! num {
                    ($v:expr) => {
                        $v.as_u64().unwrap_or(0)
                    };
                }
                let listener = |name: &str, counter: &str| {
                    s["listeners"]
                        .as_array()
                        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
                        .map(|l| num!(l["counters"][counter]))
                        .unwrap_or(0)
                };
                let check = Check {
                    conns: listener("web", "conns"),
                    packets: listener("web", "packets_in"),
                    requests: run.all_requests,
                    bulk_conns: listener("bulk", "conns"),
                    via_kernel: num!(s["global"]["fib_pass"]),
                };
                agent.stop()?;
                Ok((run, Some(check)))
            })();
            if mode == "dr" {
                dr_backends(t, false)?;
            }
            result
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// "median [min–max]" with `digits` decimals and `unit` after the median.
fn stat(v: &[f64], digits: usize, unit: &str) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.d$}{unit} [{:.d$}–{:.d$}]",
        median(v),
        min,
        max,
        d = digits
    )
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let scratch = Scratch::new("e2e-files")?;
    let t = Topology::new("e2e", BACKENDS)?;
    t.lb.sysctl("net.ipv4.ip_forward", "1")?;
    let mut servers: Vec<Server> = Vec::new();
    for (i, b) in t.backends.iter().enumerate() {
        let dir = scratch.0.join(format!("backend-{}", i + 1));
        std::fs::create_dir_all(&dir)?;
        servers.push(procs::nginx(
            b,
            &dir,
            HTTP_PORT,
            &format!("backend-{}", i + 1),
        )?);
        servers.push(procs::iperf3_server(b, &dir, BULK_PORT)?);
    }

    let mut skipped: Vec<(usize, String)> = Vec::new();
    let mut phases = vec![Phase::Direct, Phase::Nft];
    for (m, mode) in MODES.iter().enumerate() {
        match unsupported(&ctx.slb, mode, &scratch.0)? {
            None => phases.push(Phase::Vip(m)),
            Some(why) => {
                println!("e2e: {mode}: {why}");
                skipped.push((m, why));
            }
        }
    }

    // runs[phase index] = one per repetition; checks[mode] likewise.
    let mut runs: Vec<Vec<Run>> = phases.iter().map(|_| Vec::new()).collect();
    let mut checks: Vec<Vec<Check>> = MODES.iter().map(|_| Vec::new()).collect();
    let mut disturbance = Disturbance::default();
    let mut patience = Patience::new(PATIENCE);
    for rep in 0..ctx.repeat {
        for k in 0..phases.len() {
            let i = (k + rep) % phases.len();
            let p = phases[i];
            println!("e2e: repetition {}/{}: {}", rep + 1, ctx.repeat, p.label());
            let (run, check) = phase(ctx, &t, p, &scratch.0, &mut patience)
                .with_context(|| format!("e2e phase {}", p.label()))
                .map_err(|e| explain_vanished(e, &namespaces(&t)))?;
            println!(
                "     {:.0} connections/s ({} errors), {:.0} Mbit/s",
                run.cps.per_second, run.cps.errors, run.mbits
            );
            if let (Phase::Vip(m), Some(c)) = (p, check) {
                checks[m].push(c);
            }
            disturbance.worst = disturbance.worst.max(run.others);
            disturbance.repeated += run.attempts - 1;
            runs[i].push(run);
        }
    }
    drop(servers);

    Ok(Section {
        title: "End-to-end: connections/s and bulk throughput".into(),
        markdown: report(ctx, &phases, &runs, &checks, &skipped, &disturbance),
    })
}

fn report(
    ctx: &Ctx,
    phases: &[Phase],
    runs: &[Vec<Run>],
    checks: &[Vec<Check>],
    skipped: &[(usize, String)],
    disturbance: &Disturbance,
) -> String {
    let mut md = String::new();
    let of = |p: Phase| -> &Vec<Run> {
        let i = phases.iter().position(|x| *x == p).unwrap_or(0);
        &runs[i]
    };
    let cps = |p: Phase| -> Vec<f64> { of(p).iter().map(|r| r.cps.per_second).collect() };
    let bulk = |p: Phase| -> Vec<f64> { of(p).iter().map(|r| r.mbits).collect() };
    let ratio =
        |a: Vec<f64>, b: Vec<f64>| -> Vec<f64> { a.iter().zip(&b).map(|(x, y)| x / y).collect() };

    let _ = writeln!(
        md,
        "Targets: connections/s through the VIP ≥ {TARGET_CPS_DIRECT:.2}x direct and ≥ {TARGET_CPS_NFT:.1}x \
         nftables DNAT; bulk ≥ {TARGET_BULK_DIRECT:.2}x direct. Ratios within each repetition, median [min–max] \
         over {} repetitions.\n",
        ctx.repeat
    );
    let _ = writeln!(
        md,
        "| mode | connections/s: VIP / direct | VIP / nftables DNAT | bulk: VIP / direct | VIP / nftables DNAT | targets |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | --- |");
    let mut lines = Vec::new();
    for (m, mode) in MODES.iter().enumerate() {
        if let Some((_, why)) = skipped.iter().find(|(s, _)| *s == m) {
            let _ = writeln!(md, "| {mode} | {why} | | | | |");
            lines.push(format!("{mode}: {why}"));
            continue;
        }
        let vip = Phase::Vip(m);
        let cd = ratio(cps(vip), cps(Phase::Direct));
        let cn = ratio(cps(vip), cps(Phase::Nft));
        let bd = ratio(bulk(vip), bulk(Phase::Direct));
        let bn = ratio(bulk(vip), bulk(Phase::Nft));
        let mut missed = Vec::new();
        if median(&cd) < TARGET_CPS_DIRECT {
            missed.push("conn/s vs direct");
        }
        if median(&cn) < TARGET_CPS_NFT {
            missed.push("conn/s vs nftables");
        }
        if median(&bd) < TARGET_BULK_DIRECT {
            missed.push("bulk vs direct");
        }
        let verdict = if missed.is_empty() {
            "all met".to_owned()
        } else {
            format!("**missed: {}**", missed.join(", "))
        };
        let _ = writeln!(
            md,
            "| {mode} | {} | {} | {} | {} | {verdict} |",
            stat(&cd, 2, "x"),
            stat(&cn, 2, "x"),
            stat(&bd, 2, "x"),
            stat(&bn, 2, "x")
        );
        lines.push(format!(
            "{mode}: connections/s {:.2}x direct, {:.2}x nftables DNAT; bulk {:.2}x direct",
            median(&cd),
            median(&cn),
            median(&bd)
        ));
    }
    md.push('\n');
    for l in lines {
        let _ = writeln!(md, "{l}\n");
    }

    let _ = writeln!(md, "Absolute numbers, median [min–max]:\n");
    let _ = writeln!(
        md,
        "| path | connections/s | wrk errors (all runs) | bulk Mbit/s |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: |");
    for p in phases {
        let errors: u64 = of(*p).iter().map(|r| r.cps.errors).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {errors} | {} |",
            p.label(),
            stat(&cps(*p), 0, ""),
            stat(&bulk(*p), 0, "")
        );
    }
    md.push('\n');
    let _ = writeln!(md, "Checks:\n\n* {}", disturbance.line());
    for (m, mode) in MODES.iter().enumerate() {
        for (r, c) in checks[m].iter().enumerate() {
            let _ = writeln!(
                md,
                "* {mode}, repetition {}: {} requests completed by wrk; slb forwarded {} client packets on \
                 port {HTTP_PORT} ({:.1} per request), {} of them opened a flow-table entry; {} flows on port \
                 {BULK_PORT}; packets passed to the kernel for want of a neighbour: {}.",
                r + 1,
                c.requests,
                c.packets,
                c.packets as f64 / c.requests.max(1) as f64,
                c.conns,
                c.bulk_conns,
                c.via_kernel
            );
        }
    }
    let _ = writeln!(
        md,
        "* Fewer flow-table entries than requests is expected: the client reuses its source ports within a run, and a \
         reused client tuple finds its entry (same backend, same FULLNAT port; the backend recycles its TIME_WAIT \
         socket for the new SYN, as it does for the direct and nftables paths)."
    );
    md.push('\n');

    let _ = writeln!(md, "How it was measured:\n");
    let _ = writeln!(
        md,
        "* Namespace test bed: client ─ LB ─ {BACKENDS} backends, veth pairs (the far ends run a pass-only XDP \
         program so frames the LB redirects are delivered, and have TX checksum offload off). Everything shares \
         this machine's CPUs: client, LB softirq work and servers compete, so these are costs of the whole path."
    );
    let _ = writeln!(
        md,
        "* Backends: nginx (`worker_processes 1`, `return 200` of a 10-byte body, no access log) on port \
         {HTTP_PORT}, `iperf3 -s` on port {BULK_PORT}, started for the run and stopped after."
    );
    let _ = writeln!(
        md,
        "* Connections/s: `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s -H 'Connection: close'` (every request \
         on a new TCP connection). Bulk: `iperf3 -c <addr> -t {}`, one TCP stream, receiver throughput.",
        ctx.seconds,
        ctx.seconds
    );
    let _ = writeln!(
        md,
        "* Each repetition runs every phase once, in an order rotated per repetition, each starting without TIME_WAIT \
         sockets on the backends (`ss -K state time-wait`: a phase must not inherit the previous phase's \
         4-tuples with other sequence numbers and timestamp offsets): direct (no agent, no XDP, \
         no nftables on the LB: a plain Linux router; connections/s: one wrk per backend address, \
         threads and connections split between them, run at the same time and summed, so the same nginx workers \
         serve as behind the VIP; bulk: to backend 1), nftables DNAT (no agent; `dnat to \
         numgen inc mod {BACKENDS} map` on port {HTTP_PORT}, `jhash ip saddr` on port {BULK_PORT}, `ct status \
         dnat masquerade`: the FULLNAT equivalent, with conntrack), and the VIP through `slb run` for each mode \
         (listener on port {HTTP_PORT}: Maglev; on port {BULK_PORT}: source hash, so iperf3's control and data \
         connections reach the same backend)."
    );
    let _ = writeln!(
        md,
        "* Modes are a runtime capability check: a mode runs when `slb validate` accepts the benchmark's \
         configuration with `forwarding = \"<mode>\"`. fullnat: backends need nothing (replies to the \
         100.64.0.0/10 pool reach the LB by their default route). nat: backends route replies via the LB, as \
         their default route already does. dr: for the dr phase only, the backends hold the VIP on `lo` with \
         `arp_ignore=1`, `arp_announce=2`, `rp_filter=2`, and the LB has `rp_filter=0`; the replies (source: the \
         VIP) take the backends' default route, i.e. the LB's kernel routes them to the client (the XDP program \
         passes them). Chosen over a separate return link because here every path shares the same CPUs, so a \
         bypass link would not take load off anything, and the direct baseline is routed by the same kernel in \
         both directions."
    );
    md
}
