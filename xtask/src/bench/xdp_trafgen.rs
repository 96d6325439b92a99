//! The XDP benchmark's traffic: trafgen configurations (54-byte frames)
//! and runs of trafgen from the client namespace.
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use slb_tests::{
    topology::{CLIENT4, LB4, VIP4},
    Netns,
};

use super::{Case, ESTABLISHED_FLOWS, VIP_PORT};
use crate::cmd::Cmd;

/// trafgen's random seed: every program sees the same frames.
const SEED: &str = "20240601";
/// Client source ports of the established flows: FIRST_PORT.. (64 of them).
const FIRST_PORT: u64 = 20000;

/// Frames per case.
#[derive(Clone, Copy)]
pub struct Frames {
    pub new_flows: u64,
    pub established: u64,
    pub non_vip: u64,
}

impl Frames {
    pub fn of(&self, case: Case) -> u64 {
        match case {
            Case::NewFlow => self.new_flows,
            Case::Established => self.established,
            Case::NonVip => self.non_vip,
        }
    }
}

pub struct Traffic {
    pub frames: Frames,
    new_flows: PathBuf,
    syns64: PathBuf,
    acks64: PathBuf,
    non_vip: PathBuf,
}

impl Traffic {
    /// Writes the configurations into `dir`; `lb_mac` is the destination
    /// MAC (the LB's client-facing veth).
    pub fn write(dir: &Path, lb_mac: &str, frames: Frames) -> Result<Traffic> {
        let eth = format!("eth(da={lb_mac})");
        let last = FIRST_PORT + ESTABLISHED_FLOWS - 1;
        let files = [
            (
                "new-flows.cfg",
                // (a): a new flow per frame.
                format!(
                    "{{ {eth}, ipv4(sa=drnd(), da={VIP4}, ttl=64, df), \
                     tcp(sp=drnd(), dp={VIP_PORT}, syn, seq=drnd(), win=64240) }}\n"
                ),
            ),
            (
                "syn64.cfg",
                // (b), first: one SYN per flow.
                format!(
                    "{{ {eth}, ipv4(sa={CLIENT4}, da={VIP4}, ttl=64, df), \
                     tcp(sp=dinc({FIRST_PORT}, {last}), dp={VIP_PORT}, syn, seq=1000, win=64240) }}\n"
                ),
            ),
            (
                "ack64.cfg",
                // (b): ACKs cycling over the same 64 flows.
                format!(
                    "{{ {eth}, ipv4(sa={CLIENT4}, da={VIP4}, ttl=64, df), \
                     tcp(sp=dinc({FIRST_PORT}, {last}), dp={VIP_PORT}, ack, seq=1001, aseq=1, win=64240) }}\n"
                ),
            ),
            (
                "non-vip.cfg",
                // (c): UDP to the LB's own address, 12 bytes of payload.
                format!(
                    "{{ {eth}, ipv4(sa={CLIENT4}, da={LB4}, ttl=64), udp(sp=40000, dp=9), fill(0x00, 12) }}\n"
                ),
            ),
        ];
        let mut paths = Vec::new();
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            paths.push(p);
        }
        let mut it = paths.into_iter();
        let mut next = || it.next().context("trafgen configuration paths");
        Ok(Traffic {
            frames,
            new_flows: next()?,
            syns64: next()?,
            acks64: next()?,
            non_vip: next()?,
        })
    }

    /// The SYNs that open the established flows of case (b).
    pub fn send_established_syns(&self, client: &Netns) -> Result<()> {
        run(client, &self.syns64, ESTABLISHED_FLOWS, false).map(drop)
    }

    /// Sends the frames of `case`; returns how many trafgen sent.
    pub fn send(&self, client: &Netns, case: Case) -> Result<u64> {
        let cfg = match case {
            Case::NewFlow => &self.new_flows,
            Case::Established => &self.acks64,
            Case::NonVip => &self.non_vip,
        };
        // Resending is harmless for established and non-VIP frames (the
        // cost per run stays the same); new-flow SYNs sent twice would
        // find their flows and measure the established path instead.
        run(client, cfg, self.frames.of(case), case != Case::NewFlow)
    }
}

/// `trafgen -n count` out of the client's eth0, one worker, fixed seed.
/// With `retry`, a run that trafgen aborts because the veth's ring was
/// momentarily full ("Flushing TX_RING failed: Resource temporarily
/// unavailable": the XDP program on the other end runs on the same CPU and
/// fell behind) is repeated, up to three times.
fn run(client: &Netns, cfg: &Path, count: u64, retry: bool) -> Result<u64> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_once(client, cfg, count) {
            Err(e) if retry && attempt < 3 && ring_full(&e) => {
                eprintln!("xdp: trafgen's ring was full, sending again ({attempt}/3)");
            }
            other => return other,
        }
    }
}

/// trafgen gave up because the veth's ring stayed full (the program under
/// test runs on trafgen's CPU and fell behind).
pub fn ring_full(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("Flushing TX_RING failed")
}

fn run_once(client: &Netns, cfg: &Path, count: u64) -> Result<u64> {
    // A generous limit (trafgen sends 250k+ frames/s here): a run must not
    // hang the benchmark.
    let limit = (count / 50_000 + 30).to_string();
    let out = Cmd::new("ip")
        .args(["netns", "exec", &client.name])
        .args(["timeout", "-k", "5", &limit])
        .args(["trafgen", "-o", "eth0", "-i"])
        .arg(cfg)
        .args(["-P", "1", "-n", &count.to_string(), "-E", SEED])
        // No IRQ affinity changes, no global socket-memory tuning, no CPU
        // statistics.
        .args(["-Q", "--no-sock-mem", "-C"])
        .read()?;
    let sent = out
        .lines()
        .find(|l| l.contains("packets outgoing"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("trafgen printed no packet count:\n{out}"))?;
    ensure!(
        sent == count,
        "trafgen sent {sent} of {count} frames ({})",
        cfg.display()
    );
    Ok(sent)
}
