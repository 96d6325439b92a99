//! Shared by the `BPF_PROG_TEST_RUN` tests: a namespace with the routes
//! and static neighbours the FIB lookups need, the real XDP object loaded
//! with maps filled by the planner from a configuration, packet builders
//! and a parser that checks every checksum.
#![allow(dead_code)]

use aya::programs::{TestRun, TestRunOptions};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::Pid,
};
use slb::{
    agent::Applier,
    config,
    dataplane::{Dataplane, DataplaneOptions},
    planner::{self, Health},
};
use slb_tests::Netns;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x02];
pub const BACKEND2_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x03];
pub const IN_MAC_SRC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
pub const IN_MAC_DST: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 1];

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const SNAT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 10);

/// A bpffs mounted for one test, unmounted on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> PinDir {
        let p = std::env::temp_dir().join(format!("slbt-pin-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        slb_tests::sh("mount", &["-t", "bpf", "bpf", p.to_str().unwrap()]).unwrap();
        PinDir(p)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = slb_tests::sh("umount", &[self.0.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub struct Bed {
    pub dp: Dataplane,
    pub ns: Netns,
    /// Whether each run first advances the fast path's clock, as the agent
    /// does four times a second.
    pub clock_running: bool,
    /// The CPU every frame runs on. The fast path caches flow entries per
    /// CPU; in production RSS keeps a flow's packets on one CPU, and a test
    /// whose frames wandered between CPUs would see each CPU's copy.
    pub cpu: usize,
    pub applier: Applier,
    _pins: PinDir,
}

impl Bed {
    pub fn new(tag: &str, config: &str) -> Bed {
        Self::with_backend_mtu(tag, config, 1500)
    }

    /// A bed whose backend-side device has MTU `mtu`.
    pub fn with_backend_mtu(tag: &str, config: &str, mtu: u32) -> Bed {
        let ns = Netns::new(&format!("pk{tag}")).unwrap();
        ns.ip(&["link", "add", "vc0", "type", "veth", "peer", "name", "vc1"])
            .unwrap();
        ns.ip(&["link", "add", "vb0", "type", "veth", "peer", "name", "vb1"])
            .unwrap();
        for d in ["vc0", "vc1", "vb0", "vb1"] {
            ns.ip(&["link", "set", d, "up"]).unwrap();
        }
        for (dev, a) in [
            ("vc0", "10.0.0.1/24"),
            ("vc0", "fd00::1/64"),
            ("vb0", "10.0.1.1/24"),
            ("vb0", "fd00:1::1/64"),
        ] {
            ns.ip(&["addr", "add", a, "dev", dev, "nodad"]).unwrap();
        }
        ns.ip(&["route", "add", "10.0.2.0/24", "dev", "vb0"])
            .unwrap();
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        for (a, dev, m) in [
            ("10.0.0.2", "vc0", CLIENT_MAC),
            ("fd00::2", "vc0", CLIENT_MAC),
            ("10.0.1.2", "vb0", BACKEND_MAC),
            ("fd00:1::2", "vb0", BACKEND_MAC),
            ("10.0.1.3", "vb0", BACKEND2_MAC),
        ] {
            ns.ip(&[
                "neigh",
                "add",
                a,
                "lladdr",
                &mac(m),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
        ns.ip(&["link", "set", "vb0", "mtu", &mtu.to_string()])
            .unwrap();
        ns.sysctl("net.ipv4.conf.all.forwarding", "1").unwrap();
        ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();

        let pins = PinDir::new(tag);
        let cfg = config::parse(config).unwrap();
        let mut dp = Dataplane::load(&DataplaneOptions {
            pin_dir: pins.0.join("maps"),
            flow_table_size: cfg.agent.flow_table_size,
            ring_size: cfg.agent.maglev_table_size,
        })
        .unwrap();
        let mut applier = Applier::default();
        let plan = planner::plan(&cfg, &mut applier.ids, &Health::default()).unwrap();
        applier.apply(&mut dp, &plan).unwrap();
        // A device map resolves ifindexes in the caller's namespace.
        ns.enter(|| {
            for dev in ["vc0", "vb0"] {
                let idx = nix::net::if_::if_nametoindex(dev).unwrap();
                dp.add_tx_port(idx).unwrap();
            }
        })
        .unwrap();
        Bed {
            dp,
            ns,
            clock_running: true,
            cpu: 0,
            applier,
            _pins: pins,
        }
    }

    /// Applies another configuration as a reload would (same ids).
    pub fn reload(&mut self, config: &str) {
        let cfg = config::parse(config).unwrap();
        let plan = planner::plan(&cfg, &mut self.applier.ids, &Health::default()).unwrap();
        self.applier.apply(&mut self.dp, &plan).unwrap();
    }

    /// Takes the slow path out (`JUMP` cleared): whatever the fast path
    /// cannot forward on its own is then passed to the kernel.
    pub fn take_out_slow_path(&self) {
        use aya::maps::{Map, MapData, ProgramArray};
        let jump = MapData::from_pin(self.dp.pin_dir().join("JUMP")).unwrap();
        let mut jump = ProgramArray::try_from(Map::ProgramArray(jump)).unwrap();
        jump.clear_index(&0).unwrap();
    }

    /// Stops the agent's clock (see `clock_running`) and sets it to
    /// `offset_ns` from the kernel's coarse clock now.
    pub fn set_clock(&mut self, offset_ns: i64) {
        use aya::maps::{Array, Map, MapData};
        self.clock_running = false;
        self.dp.tick().unwrap();
        let clock = MapData::from_pin(self.dp.pin_dir().join("CLOCK")).unwrap();
        let mut clock: Array<_, u64> = Array::try_from(Map::Array(clock)).unwrap();
        let now = clock.get(&0, 0).unwrap();
        clock.set(0, now.wrapping_add_signed(offset_ns), 0).unwrap();
    }

    /// Runs the program on `frame` inside the namespace, as received on
    /// `vb0` when it comes from the backend subnet, else on `vc0`.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(Self::device_of(frame), frame)
    }

    /// Runs the program on `frame` as received on device `dev`.
    pub fn run_on(&mut self, dev: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        if self.clock_running {
            self.dp.tick().unwrap();
        }
        let prog = self.dp.program().unwrap();
        let cpu = self.cpu;
        self.ns
            .enter(|| {
                let mut set = CpuSet::new();
                set.set(cpu).unwrap();
                sched_setaffinity(Pid::from_raw(0), &set).unwrap();
                let ifindex = nix::net::if_::if_nametoindex(dev).unwrap();
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
                // rx_queue_index, egress_ifindex.
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                let mut out = vec![0u8; frame.len() + 256];
                let r = prog
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        data_out: Some(&mut out),
                        ctx_in: Some(&ctx),
                        ..TestRunOptions::default()
                    })
                    .unwrap();
                out.truncate(r.data_size_out as usize);
                (r.return_value, out)
            })
            .unwrap()
    }

    /// The device a frame arrives on in `run`: `vb0` from the backend
    /// subnet, else `vc0`.
    fn device_of(frame: &[u8]) -> &'static str {
        let from_backend = match PacketHeaders::from_ethernet_slice(frame)
            .ok()
            .and_then(|p| p.net)
        {
            Some(NetHeaders::Ipv4(ip, _)) => ip.source[..3] == [10, 0, 1],
            Some(NetHeaders::Ipv6(ip, _)) => ip.source[..4] == [0xfd, 0, 0, 1],
            _ => false,
        };
        if from_backend {
            "vb0"
        } else {
            "vc0"
        }
    }

    /// Runs frame `a` on CPU 0 and frame `b` on CPU 1 at the same moment
    /// (each as received in `run`), round after round, as a flow's client
    /// packets and its replies arrive on different RX queues of a real
    /// NIC. `prepare(round)` sets the stage before each round;
    /// `check(round, verdict_a, verdict_b)` looks at its outcome and says
    /// whether to go on. Returns the rounds run.
    ///
    /// The two runs start within a microsecond of each other, and CPU 0
    /// waits a little longer each round before its own, so that over the
    /// rounds every part of one run comes to overlap every part of the
    /// other. Needs two CPUs.
    pub fn race(
        &mut self,
        a: &[u8],
        b: &[u8],
        rounds: usize,
        prepare: impl FnMut(usize) + Send,
        check: impl FnMut(usize, u32, u32) -> bool + Send,
    ) -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        self.dp.tick().unwrap();
        let prog = self.dp.program().unwrap();
        let (dev_a, dev_b) = (Self::device_of(a), Self::device_of(b));
        // Round `n` starts when `go` becomes `n + 1`; CPU 1 reports the
        // round it finished (and its verdict) in `done`. `usize::MAX`: stop.
        let go = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let verdict_b = AtomicUsize::new(0);
        // The context of a frame (see `run_on`), made before the rounds:
        // nothing but the run itself between the start signal and the run.
        let ctx_of = |dev: &str, frame: &[u8]| {
            let ifindex = nix::net::if_::if_nametoindex(dev).unwrap();
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            ctx
        };
        let once = |ctx: &[u8; 24], frame: &[u8]| -> u32 {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(ctx),
                ..TestRunOptions::default()
            })
            .unwrap()
            .return_value
        };
        // Tells the other thread this one is gone, however it ends.
        struct Stop<'a>(&'a AtomicUsize);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(usize::MAX, Ordering::Release);
            }
        }
        let pin = |cpu: usize| {
            let mut set = CpuSet::new();
            set.set(cpu).unwrap();
            sched_setaffinity(Pid::from_raw(0), &set).unwrap();
        };
        self.ns
            .enter(|| {
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let _stop = Stop(&done);
                        pin(1);
                        let ctx = ctx_of(dev_b, b);
                        let mut round = 0;
                        loop {
                            let g = go.load(Ordering::Acquire);
                            if g == usize::MAX {
                                return;
                            }
                            if g == round + 1 {
                                let v = once(&ctx, b);
                                verdict_b.store(v as usize, Ordering::Relaxed);
                                done.store(g, Ordering::Release);
                                round = g;
                            }
                            std::hint::spin_loop();
                        }
                    });
                    let coordinator = s.spawn(|| {
                        // However it ends (a failed check panics), the
                        // other thread stops waiting.
                        let _stop = Stop(&go);
                        pin(0);
                        let ctx = ctx_of(dev_a, a);
                        let (mut prepare, mut check) = (prepare, check);
                        let mut ran = 0;
                        while ran < rounds {
                            prepare(ran);
                            go.store(ran + 1, Ordering::Release);
                            for _ in 0..ran % 64 {
                                std::hint::spin_loop();
                            }
                            let va = once(&ctx, a);
                            loop {
                                match done.load(Ordering::Acquire) {
                                    d if d == ran + 1 => break,
                                    usize::MAX => panic!("the run on CPU 1 failed"),
                                    _ => std::hint::spin_loop(),
                                }
                            }
                            let vb = verdict_b.load(Ordering::Relaxed) as u32;
                            ran += 1;
                            if !check(ran - 1, va, vb) {
                                break;
                            }
                        }
                        ran
                    });
                    coordinator.join().unwrap()
                })
            })
            .unwrap()
    }

    pub fn vb0_mac(&self) -> [u8; 6] {
        let out = self.ns.ip(&["-br", "link", "show", "vb0"]).unwrap();
        let mac = out.split_whitespace().nth(2).unwrap();
        let b: Vec<u8> = mac
            .split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect();
        b.try_into().unwrap()
    }
}

pub fn tcp4(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

pub fn tcp6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// What a parsed output frame says.
#[derive(Debug)]
pub struct Out {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4_csum: u16,
}

/// Parses a frame and asserts every checksum in it is correct.
pub fn parse_checked(frame: &[u8]) -> Out {
    let p = PacketHeaders::from_ethernet_slice(frame).expect("output parses");
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = p.link else {
        panic!("no ethernet header")
    };
    let payload = p.payload.slice();
    let (src, dst, sport, dport, l4_csum) = match (&p.net, &p.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(t)) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            let (sp, dp, c, want) = match t {
                TransportHeader::Tcp(tcp) => (
                    tcp.source_port,
                    tcp.destination_port,
                    tcp.checksum,
                    tcp.calc_checksum_ipv4(ip, payload).unwrap(),
                ),
                TransportHeader::Udp(udp) => {
                    let want = if udp.checksum == 0 {
                        0
                    } else {
                        udp.calc_checksum_ipv4(ip, payload).unwrap()
                    };
                    (udp.source_port, udp.destination_port, udp.checksum, want)
                }
                _ => panic!("unexpected transport"),
            };
            assert_eq!(c, want, "IPv4 transport checksum");
            (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                sp,
                dp,
                c,
            )
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(t)) => {
            let (sp, dp, c, want) = match t {
                TransportHeader::Tcp(tcp) => (
                    tcp.source_port,
                    tcp.destination_port,
                    tcp.checksum,
                    tcp.calc_checksum_ipv6(ip, payload).unwrap(),
                ),
                TransportHeader::Udp(udp) => (
                    udp.source_port,
                    udp.destination_port,
                    udp.checksum,
                    udp.calc_checksum_ipv6(ip, payload).unwrap(),
                ),
                _ => panic!("unexpected transport"),
            };
            assert_eq!(c, want, "IPv6 transport checksum");
            (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                sp,
                dp,
                c,
            )
        }
        other => panic!("unexpected headers {other:?}"),
    };
    Out {
        src_mac: eth.source,
        dst_mac: eth.destination,
        src,
        dst,
        sport,
        dport,
        l4_csum,
    }
}

/// Recomputes the IPv4 header checksum of a frame (after editing it),
/// options included.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    frame[24] = 0;
    frame[25] = 0;
    let end = 14 + usize::from(frame[14] & 0x0f) * 4;
    let h = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..end])
        .unwrap()
        .to_header();
    let c = h.calc_header_checksum().to_be_bytes();
    frame[24] = c[0];
    frame[25] = c[1];
}

/// Recomputes the TCP checksum of an IPv4 frame (after editing it).
pub fn fix_tcp_checksum(frame: &mut [u8]) {
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..34])
        .unwrap()
        .to_header();
    let tcp = etherparse::TcpHeaderSlice::from_slice(&frame[34..])
        .unwrap()
        .to_header();
    let hl = tcp.header_len();
    let c = tcp
        .calc_checksum_ipv4(&ip, &frame[34 + hl..])
        .unwrap()
        .to_be_bytes();
    frame[34 + 16] = c[0];
    frame[34 + 17] = c[1];
}

/// A TCP segment ending a flow: an RST, or a FIN (with ACK).
pub fn tcp4_end(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, rst: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(IN_MAC_SRC, IN_MAC_DST)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1001, 64000);
    let b = if rst { b.rst() } else { b.fin().ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

pub fn tcp4_rst(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp4_end(src, sport, dst, dport, true)
}

pub fn tcp4_fin(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp4_end(src, sport, dst, dport, false)
}

/// Moves the `seen_ns` of `key`'s entry in the pinned `map` back by `secs`.
pub fn age<V: aya::Pod>(
    bed: &Bed,
    map: &str,
    key: &slb_common::FlowKey,
    secs: u64,
    seen: fn(&mut V) -> &mut u64,
) {
    use aya::maps::{HashMap, Map, MapData};
    let data = MapData::from_pin(bed.dp.pin_dir().join(map)).unwrap();
    let mut m: HashMap<_, slb_common::FlowKey, V> =
        HashMap::try_from(Map::LruHashMap(data)).unwrap();
    let mut v = m.get(key, 0).unwrap();
    *seen(&mut v) -= secs * 1_000_000_000;
    m.insert(key, v, 0).unwrap();
}

/// The flow-table key of an IPv4 TCP tuple.
pub fn tcp_key4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> slb_common::FlowKey {
    use slb_common::addr::to_addr;
    slb_common::FlowKey {
        src: to_addr(src.into()),
        dst: to_addr(dst.into()),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: 6,
        _pad1: 0,
        _pad2: 0,
    }
}
