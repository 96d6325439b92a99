//! Kernel settings the dataplane depends on.
//!
//! `bpf_fib_lookup` answers "forwarding disabled" unless the ingress device
//! forwards, and packets the program hands to the kernel (neighbour not
//! resolved yet) are forwarded by the kernel itself. So the agent turns
//! forwarding on where it attaches, like an LVS director needs.
use crate::config::Config;
use std::path::Path;
use tracing::{info, warn};

fn write(path: &str, value: &str) -> std::io::Result<bool> {
    let current = std::fs::read_to_string(path)?;
    if current.trim() == value {
        return Ok(false);
    }
    std::fs::write(path, value)?;
    Ok(true)
}

fn set(path: &str, value: &str) -> Result<(), String> {
    match write(path, value) {
        Ok(true) => {
            info!(sysctl = path, value, "kernel setting changed");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// Enables what `cfg` needs on every interface it attaches to: IPv4
/// forwarding, and IPv6 forwarding when an L4 listener has an IPv6 VIP.
/// Called at start and before each reload is applied, since a reload may
/// add the first IPv6 listener (its flows would otherwise never be
/// routed: `bpf_fib_lookup` refuses).
pub fn enable_forwarding_for(cfg: &Config) -> Result<(), String> {
    let v6 = cfg.l4_listeners().any(|l| l.vip.is_ipv6());
    for iface in &cfg.agent.interfaces {
        enable_forwarding(iface, v6).map_err(|e| format!("interface {iface}: {e}"))?;
    }
    Ok(())
}

/// Enables IPv4 forwarding on `iface`, and IPv6 forwarding when `v6`.
pub fn enable_forwarding(iface: &str, v6: bool) -> Result<(), String> {
    set(&format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"), "1")?;
    if v6 {
        set(&format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"), "1")?;
        // The kernel's own IPv6 forwarding path checks the global switch.
        set("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    let rp = format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter");
    let all = "/proc/sys/net/ipv4/conf/all/rp_filter";
    let strict = |p: &str| {
        Path::new(p).exists() && std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1")
    };
    if strict(&rp) || strict(all) {
        warn!(
            iface,
            "rp_filter is strict (1): packets the XDP program hands to the kernel before a \
             neighbour is resolved carry FULLNAT source addresses and may be dropped; use 0 or 2"
        );
    }
    Ok(())
}
