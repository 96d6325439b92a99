//! `cargo xtask demo`: the main job on a built-in topology. Builds slb,
//! creates a client, a load balancer and three backends in network
//! namespaces, runs `slb run` on the load balancer with a printed config,
//! sends a few hundred TCP connections and UDP requests to the VIPs and
//! prints which backend answered, next to the configured weights. Everything
//! is torn down at the end (also on failure).
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use anyhow::{bail, Context, Result};
use slb_tests::{
    config::{render, ListenerSpec},
    servers::{tcp_hello, udp_ask, NameServer},
    topology::{backend4, VIP4},
    Agent, Topology,
};

use crate::{
    build,
    cmd::is_root,
    setup::{self, System},
};

#[derive(clap::Args)]
pub struct Args {
    /// TCP connections to open through the VIP.
    #[arg(long, default_value_t = 600)]
    connections: usize,
}

const WEIGHTS: [u32; 3] = [1, 2, 3];
const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(args: Args) -> Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    setup::ensure(System::Require, false)?;
    let bin = build::slb(false)?;
    // The test bed finds the binary (and the pass-only XDP object next to
    // it) through SLB_BIN.
    std::env::set_var("SLB_BIN", &bin);
    slb_tests::netns::remove_leftovers();

    println!(
        "==> topology: client ─ lb ─ 3 backends (network namespaces, veth, native XDP on the lb)"
    );
    let t = Topology::new("demo", 3)?;
    let mut servers = Vec::new();
    for i in 0..3 {
        let name = format!("backend-{}", i + 1);
        servers.push(NameServer::tcp(
            &t.backends[i],
            SocketAddr::new(backend4(i).into(), 8080),
            &name,
        )?);
        servers.push(NameServer::udp(
            &t.backends[i],
            SocketAddr::new(backend4(i).into(), 5353),
            &name,
        )?);
    }
    let mut web = ListenerSpec::new("web", VIP4.into(), 80, "tcp").scheduler("maglev");
    let mut dns = ListenerSpec::new("dns", VIP4.into(), 53, "udp").scheduler("wrr");
    for (i, w) in WEIGHTS.iter().enumerate() {
        web = web.backend(backend4(i).into(), 8080, *w);
        dns = dns.backend(backend4(i).into(), 5353, *w);
    }

    let mut config_text = String::new();
    let agent = Agent::start(&t.lb, "demo", |dir| {
        config_text = render(3, dir, &[web, dns]);
        config_text.clone()
    })
    .context("starting slb")?;
    println!("==> slb.toml\n{config_text}");
    println!("==> slb is running on the lb ({}):", bin.display());
    for line in agent.log_text().lines() {
        println!("    {line}");
    }

    println!(
        "==> {} TCP connections to {VIP4}:80 from the client",
        args.connections
    );
    let mut tcp: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..args.connections {
        let (name, _) = tcp_hello(&t.client, SocketAddr::new(VIP4.into(), 80), TIMEOUT)
            .with_context(|| format!("connection {i}"))?;
        *tcp.entry(name).or_default() += 1;
    }
    let requests = args.connections / 2;
    println!("==> {requests} UDP requests to {VIP4}:53 from the client");
    let mut udp: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..requests {
        let name = udp_ask(
            &t.client,
            SocketAddr::new(VIP4.into(), 53),
            format!("q{i}").as_bytes(),
            TIMEOUT,
        )
        .with_context(|| format!("request {i}"))?;
        *udp.entry(name).or_default() += 1;
    }

    let total_w: u32 = WEIGHTS.iter().sum();
    println!();
    println!(
        "{:<10} {:>6} {:>13} {:>15} {:>15}",
        "backend", "weight", "weight share", "tcp (maglev)", "udp (wrr)"
    );
    for (i, w) in WEIGHTS.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        let share = |m: &BTreeMap<String, usize>, n: usize| {
            let c = m.get(&name).copied().unwrap_or(0);
            format!("{c} ({:.1}%)", 100.0 * c as f64 / n.max(1) as f64)
        };
        println!(
            "{:<10} {:>6} {:>12.1}% {:>15} {:>15}",
            name,
            w,
            100.0 * *w as f64 / total_w as f64,
            share(&tcp, args.connections),
            share(&udp, requests)
        );
    }
    let pool: Vec<String> = servers
        .iter()
        .flat_map(|s| s.peers())
        .map(|p| p.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    println!(
        "\nsource addresses the backends saw (FULLNAT pool): {}",
        pool.join(", ")
    );
    drop(agent);
    println!("==> torn down: slb stopped, XDP detached, namespaces removed");
    Ok(())
}
