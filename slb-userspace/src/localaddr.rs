//! Local addresses on `lo`: the health-check source (SPEC §4) and the VIPs
//! of L7 listeners (SPEC §5) must be local addresses of the LB host. The
//! agent adds the missing ones to `lo` (IPv4 as /32, IPv6 as /128 with
//! `nodad`), remembers which ones *it* added, and removes only those on
//! [`LocalAddrs::release`] (and on drop).
//!
//! Implementation: rtnetlink messages built with `netlink-packet-route`,
//! sent over a plain synchronous `netlink-sys` socket. Chosen over shelling
//! out to `ip`: no dependency on the iproute2 binary, exact kernel error
//! codes (`EEXIST` makes adding idempotent without parsing text). Chosen
//! over the async `rtnetlink` crate: removal must also work from `Drop`,
//! outside any runtime, and each request is a single message and its ack.
//!
//! The netlink socket is opened once, by [`LocalAddrs::new`], and belongs
//! to the network namespace of the calling thread at that moment: every
//! later change, including the removal on drop, happens in that namespace
//! (the agent runs inside one under `ip netns exec` in the tests).

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tracing::{debug, info, warn};

/// The loopback device the addresses are put on.
pub const LOOPBACK: &str = "lo";

#[derive(Debug, thiserror::Error)]
pub enum LocalAddrError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("no loopback device `{LOOPBACK}`: {0}")]
    NoLoopback(#[source] io::Error),
    #[error("cannot list the local addresses: {0}")]
    List(#[source] io::Error),
    #[error("cannot add {addr} to {LOOPBACK}: {source}{}", hint(source))]
    Add {
        addr: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {addr} from {LOOPBACK}: {source}{}", hint(source))]
    Remove {
        addr: IpAddr,
        #[source]
        source: io::Error,
    },
}

fn hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EPERM) {
        " (needs CAP_NET_ADMIN: run as root)"
    } else {
        ""
    }
}

/// Addresses this process made local, on `lo`.
pub struct LocalAddrs {
    sock: Socket,
    lo_index: u32,
    seq: u32,
    added: BTreeSet<IpAddr>,
}

impl std::fmt::Debug for LocalAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAddrs")
            .field("lo_index", &self.lo_index)
            .field("added", &self.added)
            .finish()
    }
}

impl LocalAddrs {
    /// Opens the netlink socket (in the calling thread's network
    /// namespace). Adds nothing yet.
    pub fn new() -> Result<Self, LocalAddrError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(LocalAddrError::Socket)?;
        sock.bind_auto().map_err(LocalAddrError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(LocalAddrError::Socket)?;
        let lo_index = nix::net::if_::if_nametoindex(LOOPBACK)
            .map_err(|e| LocalAddrError::NoLoopback(io::Error::from(e)))?;
        Ok(LocalAddrs {
            sock,
            lo_index,
            seq: 0,
            added: BTreeSet::new(),
        })
    }

    /// The addresses this value added (and will remove).
    pub fn added(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.added.iter().copied()
    }

    /// Every address configured on any device of this namespace.
    pub fn local_addresses(&mut self) -> Result<BTreeSet<IpAddr>, LocalAddrError> {
        let mut dump = AddressMessage::default();
        dump.header.family = AddressFamily::Unspec;
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(dump),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .map_err(LocalAddrError::List)?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => address_of(a),
                _ => None,
            })
            .collect())
    }

    /// True when `addr` is configured on some device of this namespace, or
    /// routed locally without being configured (127.0.0.0/8 beyond
    /// 127.0.0.1, `ip route add local ...` ranges): a socket can bind it.
    pub fn is_local(&mut self, addr: IpAddr) -> Result<bool, LocalAddrError> {
        if self.local_addresses()?.contains(&addr) {
            return Ok(true);
        }
        // With non-local binds allowed (common next to keepalived) a bind
        // proves nothing.
        let sysctl = match addr {
            IpAddr::V4(_) => "/proc/sys/net/ipv4/ip_nonlocal_bind",
            IpAddr::V6(_) => "/proc/sys/net/ipv6/ip_nonlocal_bind",
        };
        if std::fs::read_to_string(sysctl).is_ok_and(|v| v.trim() != "0") {
            return Ok(false);
        }
        Ok(std::net::UdpSocket::bind((addr, 0)).is_ok())
    }

    /// Makes `addr` local: adds it to `lo` unless some device has it
    /// already. Returns true when this call added it. Idempotent.
    pub fn ensure(&mut self, addr: IpAddr) -> Result<bool, LocalAddrError> {
        if self.is_local(addr)? {
            debug!("{addr} is already a local address");
            return Ok(false);
        }
        let msg = RouteNetlinkMessage::NewAddress(self.lo_message(addr));
        match self.request(msg, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => {
                info!("added {addr}/{} to {LOOPBACK}", prefix_len(addr));
                self.added.insert(addr);
                Ok(true)
            }
            // Added by someone else meanwhile: not ours to remove.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(source) => Err(LocalAddrError::Add { addr, source }),
        }
    }

    /// [`ensure`](Self::ensure) for each address; returns those this call
    /// added. Lists the local addresses once for all of them: the agent
    /// calls this on its clock (to put back addresses that went missing),
    /// and a listing per address would repeat the same dump for each.
    pub fn ensure_all(
        &mut self,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Vec<IpAddr>, LocalAddrError> {
        let configured = self.local_addresses()?;
        let mut added = Vec::new();
        for addr in addrs {
            if !configured.contains(&addr) && self.ensure(addr)? {
                added.push(addr);
            }
        }
        Ok(added)
    }

    /// Makes exactly `wanted` ensured (config reload, and on the agent's
    /// clock): ensures each, and removes the addresses this value added
    /// that are no longer wanted. Returns the addresses it added.
    pub fn sync(&mut self, wanted: &[IpAddr]) -> Result<Vec<IpAddr>, LocalAddrError> {
        let stale: Vec<IpAddr> = self
            .added
            .iter()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in stale {
            self.remove(addr)?;
        }
        self.ensure_all(wanted.iter().copied())
    }

    /// Removes `addr` from `lo` if this value added it. Returns true when
    /// it was ours (already gone counts as removed).
    pub fn remove(&mut self, addr: IpAddr) -> Result<bool, LocalAddrError> {
        if !self.added.contains(&addr) {
            return Ok(false);
        }
        let msg = RouteNetlinkMessage::DelAddress(self.lo_message(addr));
        match self.request(msg, NLM_F_REQUEST | NLM_F_ACK) {
            Ok(_) => info!("removed {addr}/{} from {LOOPBACK}", prefix_len(addr)),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                debug!("{addr} was already gone from {LOOPBACK}")
            }
            Err(source) => return Err(LocalAddrError::Remove { addr, source }),
        }
        self.added.remove(&addr);
        Ok(true)
    }

    /// Removes every address this value added. Tries them all; returns the
    /// first error.
    pub fn release(&mut self) -> Result<(), LocalAddrError> {
        let mut first = None;
        for addr in self.added.clone() {
            if let Err(e) = self.remove(addr) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn lo_message(&self, addr: IpAddr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = prefix_len(addr);
        m.header.index = self.lo_index;
        m.header.scope = AddressScope::Universe;
        if addr.is_ipv6() {
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        m.attributes.push(AddressAttribute::Local(addr));
        m.attributes.push(AddressAttribute::Address(addr));
        m
    }

    /// Sends one request and collects the replies up to its ack (or the
    /// end of a dump). A NACK is returned as its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = seq;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;

        let mut out = Vec::new();
        let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            rbuf.clear();
            let n = self.sock.recv(&mut rbuf, libc::MSG_TRUNC)?;
            if n > rbuf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink reply of {n} bytes truncated"),
                ));
            }
            let mut offset = 0;
            while offset < rbuf.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }
}

impl Drop for LocalAddrs {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            warn!("{e}");
        }
    }
}

fn prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address of an address message: `IFA_LOCAL` when present (the
/// local end of a point-to-point address), else `IFA_ADDRESS`.
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A network namespace deleted on drop (also when the test fails).
    struct Netns(String);

    impl Netns {
        fn create(name: String) -> Option<Netns> {
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then_some(Netns(name))
        }

        fn ip(&self, args: &[&str]) -> String {
            let out = Command::new("ip")
                .args(["-n", &self.0])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        /// Runs `f` on a thread that entered the namespace.
        fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            let path = format!("/run/netns/{}", self.0);
            let handle = std::thread::spawn(move || {
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn adds_and_removes_only_its_own_addresses_in_a_netns() {
        let Some(ns) = Netns::create(format!("slbt-la-{}", std::process::id())) else {
            eprintln!("cannot create a network namespace (not root?): skipped");
            return;
        };
        // An address present before: never removed.
        ns.ip(&["addr", "add", "100.64.0.2/32", "dev", "lo"]);

        let v4: IpAddr = "100.64.0.1".parse().unwrap();
        let v6: IpAddr = "fd64::1".parse().unwrap();
        let pre: IpAddr = "100.64.0.2".parse().unwrap();
        let mut addrs = ns.run(move || {
            let mut la = LocalAddrs::new().unwrap();
            assert!(!la.is_local(v4).unwrap());
            assert!(la.is_local(pre).unwrap());
            assert!(la.ensure(v4).unwrap());
            assert!(la.ensure(v6).unwrap());
            assert!(!la.ensure(pre).unwrap());
            // Idempotent.
            assert!(!la.ensure(v4).unwrap());
            assert!(la.is_local(v4).unwrap() && la.is_local(v6).unwrap());
            assert_eq!(la.added().collect::<Vec<_>>(), vec![v4, v6]);
            la
        });
        let shown = ns.ip(&["-o", "addr", "show", "dev", "lo"]);
        assert!(shown.contains("inet 100.64.0.1/32"), "{shown}");
        assert!(shown.contains("inet6 fd64::1/128"), "{shown}");

        // The socket stays in the namespace: release works from here.
        addrs.release().unwrap();
        let shown = ns.ip(&["-o", "addr", "show", "dev", "lo"]);
        assert!(!shown.contains("100.64.0.1/"), "{shown}");
        assert!(!shown.contains("fd64::1/"), "{shown}");
        assert!(shown.contains("inet 100.64.0.2/32"), "{shown}");
        assert_eq!(addrs.added().count(), 0);

        // Drop removes too; sync removes what is no longer wanted; a
        // second instance does not take over addresses of the first.
        ns.run(move || {
            let mut la = LocalAddrs::new().unwrap();
            la.ensure_all([v4, v6]).unwrap();
            let mut other = LocalAddrs::new().unwrap();
            assert!(!other.ensure(v4).unwrap());
            other.release().unwrap();
            assert!(la.is_local(v4).unwrap());
            assert_eq!(la.sync(&[v6]).unwrap(), Vec::<IpAddr>::new());
            assert!(!la.is_local(v4).unwrap());
            assert!(la.is_local(v6).unwrap());
            // Removed behind its back: put back (and still its own).
            let del = Command::new("ip")
                .args(["addr", "del", "fd64::1/128", "dev", "lo"])
                .status()
                .unwrap();
            assert!(del.success());
            assert!(!la.is_local(v6).unwrap());
            assert_eq!(la.sync(&[v6]).unwrap(), vec![v6]);
            assert!(la.is_local(v6).unwrap());
            assert_eq!(la.added().collect::<Vec<_>>(), vec![v6]);
            drop(la);
            let mut check = LocalAddrs::new().unwrap();
            assert!(!check.is_local(v6).unwrap());
            assert!(check.is_local(pre).unwrap());
        });
    }
}
