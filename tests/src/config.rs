//! Agent configurations for the test bed.
use crate::topology::{lb_interfaces, PROBE4, PROBE6, SNAT4, SNAT6};
use std::{fmt::Write, net::IpAddr, path::Path};

/// One `[[listener]]` of a generated configuration.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub scheduler: &'static str,
    /// Extra `key = value` lines for the listener table.
    pub extra: Vec<String>,
    /// (address, port, weight)
    pub backends: Vec<(IpAddr, u16, u32)>,
}

impl ListenerSpec {
    pub fn new(name: &str, vip: IpAddr, port: u16, protocol: &'static str) -> Self {
        ListenerSpec {
            name: name.to_owned(),
            vip,
            port,
            protocol,
            scheduler: "maglev",
            extra: Vec::new(),
            backends: Vec::new(),
        }
    }

    pub fn backend(mut self, addr: IpAddr, port: u16, weight: u32) -> Self {
        self.backends.push((addr, port, weight));
        self
    }

    pub fn scheduler(mut self, s: &'static str) -> Self {
        self.scheduler = s;
        self
    }

    pub fn extra(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }
}

fn quote(ip: IpAddr) -> String {
    format!("\"{ip}\"")
}

/// A configuration for the LB of a topology with `backends` backends.
pub fn render(backends: usize, pin_dir: &Path, listeners: &[ListenerSpec]) -> String {
    let ifaces: Vec<String> = lb_interfaces(backends)
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect();
    let mut local: Vec<String> = SNAT4.iter().map(|a| quote((*a).into())).collect();
    local.extend(SNAT6.iter().map(|a| quote((*a).into())));
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = write!(
        s,
        "[agent]\ninterfaces = [{}]\nxdp_mode = \"native\"\nprobe_source = [\"{PROBE4}\", \"{PROBE6}\"]\n\
         local_addresses = [{}]\npin_path = \"{}\"\nflow_table_size = 65536\nmaglev_table_size = 65537\n\
         control_socket = \"{}\"\n",
        ifaces.join(", "),
        local.join(", "),
        pin_dir.join("bpf").display(),
        pin_dir.join("control.sock").display(),
    );
    for l in listeners {
        let _ = write!(
            s,
            "\n[[listener]]\nname = \"{}\"\nvip = {}\nport = {}\nprotocol = \"{}\"\nscheduler = \"{}\"\n",
            l.name,
            quote(l.vip),
            l.port,
            l.protocol,
            l.scheduler
        );
        for e in &l.extra {
            let _ = writeln!(s, "{e}");
        }
        for (a, p, w) in &l.backends {
            let _ = write!(
                s,
                "  [[listener.backend]]\n  address = {}\n  port = {p}\n  weight = {w}\n",
                quote(*a)
            );
        }
    }
    s
}

/// `nat` backends whose addresses all start at one slot of the
/// destination table, one more than it can probe: a file that validates
/// but that the agent cannot apply.
pub fn unplaceable(vip: IpAddr, vip_port: u16) -> ListenerSpec {
    use slb_common::{addr::to_addr, hash::dest_slot, limits::DEST_PROBES};
    let first = dest_slot(&to_addr("10.9.0.0".parse().unwrap()));
    let mut l = ListenerSpec::new("many", vip, vip_port, "tcp").extra("forwarding = \"nat\"");
    let mut found = 0;
    for i in 0u32.. {
        let ip = std::net::Ipv4Addr::from(0x0a09_0000 + i);
        if dest_slot(&to_addr(ip.into())) == first {
            l = l.backend(ip.into(), 80, 1);
            found += 1;
            if found > DEST_PROBES {
                break;
            }
        }
    }
    l
}
