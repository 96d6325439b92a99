//! The standard test bed: a client, a load balancer and N backends, each in
//! its own namespace, joined by one veth pair per link and routed.
//!
//! ```text
//!  client ns            lb ns                         backend ns i
//!  eth0 10.0.0.2  ──  cl0 10.0.0.1
//!       fd00::2           fd00::1
//!                      be<i> 10.0.<i>.1       ──     eth0 10.0.<i>.2
//!                            fd00:<i>::1                  fd00:<i>::2
//! ```
//! The client and backends route everything via the LB (so NAT-mode
//! replies come back through it); the VIPs are not local anywhere: the
//! XDP program on the LB owns them.
use crate::{netns::Netns, pass_object, servers::NameServer};
use anyhow::Result;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 10);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd10, 0, 0, 0, 0, 0, 0, 0x10);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const LB4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// FULLNAT source pools and the health-check source.
pub const SNAT4: [Ipv4Addr; 2] = [Ipv4Addr::new(100, 64, 0, 10), Ipv4Addr::new(100, 64, 0, 11)];
pub const SNAT6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd64, 0, 0, 0, 0, 0, 0, 0x10)];
pub const PROBE4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
pub const PROBE6: Ipv6Addr = Ipv6Addr::new(0xfd64, 0, 0, 0, 0, 0, 0, 1);
/// The health-check source of the standby (see [`Topology::add_standby`]).
pub const STANDBY_PROBE4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

/// The first FULLNAT source candidate (from [`SNAT4`] / [`SNAT6`]) of a
/// TCP connection from `client` to `vip`: the source a node with an empty
/// table gives it. A node that found it taken (by an entry of an earlier
/// connection) used a later candidate, which a standby does not
/// reproduce.
pub fn first_fullnat_source(client: SocketAddr, vip: SocketAddr) -> SocketAddr {
    use slb_common::{
        addr::to_addr,
        hash::{flow_hash, snat_candidate},
    };
    let h = flow_hash(
        &to_addr(client.ip()),
        &to_addr(vip.ip()),
        client.port().to_be(),
        vip.port().to_be(),
        6,
    );
    let (ip, count): (Vec<IpAddr>, u32) = if client.is_ipv4() {
        (
            SNAT4.iter().map(|a| (*a).into()).collect(),
            SNAT4.len() as u32,
        )
    } else {
        (
            SNAT6.iter().map(|a| (*a).into()).collect(),
            SNAT6.len() as u32,
        )
    };
    let (idx, port) = snat_candidate(h, 0, count);
    SocketAddr::new(ip[idx as usize], port)
}

pub fn backend4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, i as u8 + 1, 2)
}

pub fn backend6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, i as u16 + 1, 0, 0, 0, 0, 0, 2)
}

pub struct Topology {
    pub client: Netns,
    pub lb: Netns,
    pub backends: Vec<Netns>,
}

/// Names of the LB's interfaces.
pub fn lb_interfaces(backends: usize) -> Vec<String> {
    let mut v = vec!["cl0".to_owned()];
    v.extend((1..=backends).map(|i| format!("be{i}")));
    v
}

/// Joins `a_dev` in `a` and `b_dev` in `b` with a veth pair and brings
/// both ends up.
fn link(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    crate::sh(
        "ip",
        &[
            "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
            &b.name,
        ],
    )?;
    a.ip(&["link", "set", a_dev, "up"])?;
    b.ip(&["link", "set", b_dev, "up"])?;
    Ok(())
}

/// Prepares a host-side veth end that sends into the LB's XDP program:
/// TX checksum offload off (a redirected partial checksum is never
/// completed) and the pass program attached (a veth only delivers frames
/// XDP redirected into it when its peer runs XDP).
fn prepare_host_end(ns: &Netns, dev: &str) -> Result<()> {
    ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
    let obj = pass_object();
    let obj = obj
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    ns.ip(&[
        "link", "set", "dev", dev, "xdpdrv", "obj", obj, "sec", "xdp",
    ])?;
    Ok(())
}

fn addr(ns: &Netns, dev: &str, a: &str) -> Result<()> {
    ns.ip(&["addr", "add", a, "dev", dev, "nodad"])
        .or_else(|_| ns.ip(&["addr", "add", a, "dev", dev]))?;
    Ok(())
}

/// Joins backend `i` (namespace `ns`) to the LB: the link, its addresses,
/// the backend's default routes via the LB.
fn wire_backend(lb: &Netns, ns: &Netns, i: usize) -> Result<()> {
    let lb_dev = format!("be{}", i + 1);
    link(ns, "eth0", lb, &lb_dev)?;
    addr(ns, "eth0", &format!("{}/24", backend4(i)))?;
    addr(ns, "eth0", &format!("{}/64", backend6(i)))?;
    addr(lb, &lb_dev, &format!("10.0.{}.1/24", i + 1))?;
    addr(lb, &lb_dev, &format!("fd00:{}::1/64", i + 1))?;
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &format!("10.0.{}.1", i + 1),
    ])?;
    ns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        &format!("fd00:{}::1", i + 1),
    ])?;
    prepare_host_end(ns, "eth0")
}

impl Topology {
    /// Builds the topology with `backends` backends. `tag` names the
    /// namespaces (keep it short: it becomes part of their names).
    pub fn new(tag: &str, backends: usize) -> Result<Topology> {
        let client = Netns::new(&format!("{tag}-c"))?;
        let lb = Netns::new(&format!("{tag}-lb"))?;
        let mut t = Topology {
            client,
            lb,
            backends: Vec::new(),
        };
        link(&t.client, "eth0", &t.lb, "cl0")?;
        addr(&t.client, "eth0", "10.0.0.2/24")?;
        addr(&t.client, "eth0", "fd00::2/64")?;
        addr(&t.lb, "cl0", "10.0.0.1/24")?;
        addr(&t.lb, "cl0", "fd00::1/64")?;
        t.client
            .ip(&["route", "add", "default", "via", "10.0.0.1"])?;
        t.client
            .ip(&["-6", "route", "add", "default", "via", "fd00::1"])?;
        prepare_host_end(&t.client, "eth0")?;

        for i in 0..backends {
            let ns = Netns::new(&format!("{tag}-b{}", i + 1))?;
            wire_backend(&t.lb, &ns, i)?;
            t.backends.push(ns);
        }
        // IPv6 addresses need a moment to leave the tentative state even
        // with nodad on some kernels; wait until the client can use its own.
        t.wait_v6_ready()?;
        Ok(t)
    }

    fn wait_v6_ready(&self) -> Result<()> {
        for _ in 0..100 {
            let out = self
                .client
                .ip(&["-6", "addr", "show", "dev", "eth0", "tentative"])?;
            if out.trim().is_empty() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!("IPv6 addresses of {} stayed tentative", self.client.name)
    }

    /// Deletes the link between the LB and backend `i` and creates it
    /// again: devices of the same names with new interface indexes, as
    /// after a driver reload or a re-created veth.
    pub fn recreate_backend_link(&self, i: usize) -> Result<()> {
        self.lb.ip(&["link", "del", &format!("be{}", i + 1)])?;
        wire_backend(&self.lb, &self.backends[i], i)
    }

    pub fn lb_interfaces(&self) -> Vec<String> {
        lb_interfaces(self.backends.len())
    }

    /// Address of backend `i` in the given family.
    pub fn backend_addr(&self, i: usize, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(backend6(i))
        } else {
            IpAddr::V4(backend4(i))
        }
    }

    /// A second load balancer, `<tag>-lb2`, for failover tests: its own
    /// link to the client (10.2.0.0/24) and to every backend
    /// (10.3.<i>.0/24), with the first one's device names (`cl0`,
    /// `be<i>`), so one configuration serves both. Its health checks come
    /// from [`STANDBY_PROBE4`], which the backends route to it; all other
    /// traffic keeps going through the first until [`Topology::fail_over`].
    pub fn add_standby(&self, tag: &str) -> Result<Netns> {
        let lb2 = Netns::new(&format!("{tag}-lb2"))?;
        link(&self.client, "eth1", &lb2, "cl0")?;
        addr(&self.client, "eth1", "10.2.0.2/24")?;
        addr(&lb2, "cl0", "10.2.0.1/24")?;
        lb2.ip(&["route", "add", "10.0.0.0/24", "via", "10.2.0.2"])?;
        // Replies from the VIP arrive on the new link after the failover.
        self.client.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        self.client.sysctl("net.ipv4.conf.eth1.rp_filter", "0")?;
        prepare_host_end(&self.client, "eth1")?;
        for (i, b) in self.backends.iter().enumerate() {
            let dev = format!("be{}", i + 1);
            let (own, standby) = (format!("10.3.{}.2", i + 1), format!("10.3.{}.1", i + 1));
            link(b, "eth1", &lb2, &dev)?;
            addr(b, "eth1", &format!("{own}/24"))?;
            addr(&lb2, &dev, &format!("{standby}/24"))?;
            lb2.ip(&["route", "add", &format!("{}/32", backend4(i)), "via", &own])?;
            b.ip(&[
                "route",
                "add",
                &format!("{STANDBY_PROBE4}/32"),
                "via",
                &standby,
            ])?;
            b.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            b.sysctl("net.ipv4.conf.eth1.rp_filter", "0")?;
            prepare_host_end(b, "eth1")?;
        }
        Ok(lb2)
    }

    /// Sends the client's traffic for the VIPs and the backends' replies
    /// (to the FULLNAT pool, and to clients in `nat` mode) to the standby:
    /// what VRRP moving the VIPs and the pool to it would do.
    pub fn fail_over(&self) -> Result<()> {
        self.client
            .ip(&["route", "replace", "default", "via", "10.2.0.1"])?;
        for (i, b) in self.backends.iter().enumerate() {
            b.ip(&[
                "route",
                "replace",
                "default",
                "via",
                &format!("10.3.{}.1", i + 1),
            ])?;
        }
        Ok(())
    }

    /// A TCP name server on `port` of every backend's own address, named
    /// `b1`, `b2`, ...
    pub fn tcp_servers(&self, port: u16, v6: bool) -> Vec<NameServer> {
        self.name_servers(port, v6, "b", NameServer::tcp)
    }

    /// A UDP name server on `port` of every backend's own address, named
    /// `u1`, `u2`, ...
    pub fn udp_servers(&self, port: u16, v6: bool) -> Vec<NameServer> {
        self.name_servers(port, v6, "u", NameServer::udp)
    }

    fn name_servers(
        &self,
        port: u16,
        v6: bool,
        prefix: &str,
        start: fn(&Netns, SocketAddr, &str) -> Result<NameServer>,
    ) -> Vec<NameServer> {
        (0..self.backends.len())
            .map(|i| {
                let addr = SocketAddr::new(self.backend_addr(i, v6), port);
                start(&self.backends[i], addr, &format!("{prefix}{}", i + 1))
                    .unwrap_or_else(|e| panic!("server {addr} in backend {i}: {e:#}"))
            })
            .collect()
    }
}

impl Topology {
    /// Extra client addresses 10.0.0.3 ... (for tests that need several
    /// clients).
    pub fn add_client_addrs(&self, n: usize) -> Result<Vec<IpAddr>> {
        let mut v = Vec::new();
        for i in 0..n {
            let a = Ipv4Addr::new(10, 0, 0, 3 + i as u8);
            addr(&self.client, "eth0", &format!("{a}/24"))?;
            v.push(IpAddr::V4(a));
        }
        Ok(v)
    }

    /// Extra client addresses fd00::3 ... (IPv6 twin of
    /// [`Topology::add_client_addrs`]).
    pub fn add_client_addrs6(&self, n: usize) -> Result<Vec<IpAddr>> {
        let mut v = Vec::new();
        for i in 0..n {
            let a = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3 + i as u16);
            addr(&self.client, "eth0", &format!("{a}/64"))?;
            v.push(IpAddr::V6(a));
        }
        Ok(v)
    }

    /// Prepares direct routing with the README's backend commands: each
    /// backend holds the VIPs on `lo` (ARP for them ignored, as an LVS-DR
    /// real server must), relaxes reverse-path filtering, and gets its own
    /// return link to the client (IPv4 and IPv6), so replies never pass
    /// the load balancer. Its IPv4 default route takes that link, as a DR
    /// backend's usually bypasses the load balancer: only the README's
    /// route for 100.64.0.0/10 brings the health checks' replies back.
    pub fn prepare_direct_routing(&self, vips: &[IpAddr]) -> Result<()> {
        self.client.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        for (i, b) in self.backends.iter().enumerate() {
            for vip in vips {
                let len = if vip.is_ipv4() { 32 } else { 128 };
                addr(b, "lo", &format!("{vip}/{len}"))?;
            }
            b.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            b.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            b.sysctl("net.ipv4.conf.all.rp_filter", "2")?;
            let client_dev = format!("r{}", i + 1);
            link(b, "ret0", &self.client, &client_dev)?;
            self.client
                .sysctl(&format!("net.ipv4.conf.{client_dev}.rp_filter"), "0")?;
            addr(b, "ret0", &format!("10.1.{}.1/24", i + 1))?;
            addr(&self.client, &client_dev, &format!("10.1.{}.2/24", i + 1))?;
            b.ip(&[
                "route",
                "replace",
                "default",
                "via",
                &format!("10.1.{}.2", i + 1),
            ])?;
            b.ip(&[
                "route",
                "add",
                "100.64.0.0/10",
                "via",
                &format!("10.0.{}.1", i + 1),
            ])?;
            addr(b, "ret0", &format!("fd01:{}::1/64", i + 1))?;
            addr(&self.client, &client_dev, &format!("fd01:{}::2/64", i + 1))?;
            b.ip(&[
                "-6",
                "route",
                "add",
                &format!("{CLIENT6}/128"),
                "via",
                &format!("fd01:{}::2", i + 1),
            ])?;
        }
        Ok(())
    }

    /// Narrows the path between the LB and backend `i` to `mtu` the way a
    /// smaller link beyond the backend's own interface would: the LB's
    /// device gets the MTU, the backend's routes send at most `mtu` but it
    /// still advertises the MSS of its 1500-byte interface. So clients send
    /// segments the LB cannot forward, and only path MTU discovery through
    /// the LB lets them through.
    pub fn narrow_backend_path(&self, i: usize, mtu: u32) -> Result<()> {
        let m = mtu.to_string();
        self.lb
            .ip(&["link", "set", &format!("be{}", i + 1), "mtu", &m])?;
        let gw = format!("10.0.{}.1", i + 1);
        self.backends[i].ip(&[
            "route", "change", "default", "via", &gw, "mtu", &m, "advmss", "1460",
        ])?;
        Ok(())
    }

    /// RX packet count of a device in the LB namespace.
    pub fn lb_rx_packets(&self, dev: &str) -> Result<u64> {
        self.lb.rx_packets(dev)
    }
}
