//! Kernel settings the dataplane depends on.
//!
//! `bpf_fib_lookup` answers "forwarding disabled" unless the ingress device
//! forwards, and packets the program hands to the kernel (neighbour not
//! resolved yet) are forwarded by the kernel itself. So the agent turns
//! forwarding on where it attaches, like an LVS director needs.
use crate::config::Config;
use std::path::Path;
use tracing::{info, warn};

/// A setting changed, with the value it had: a reload that fails after
/// turning forwarding on puts it back (IPv6 forwarding on makes the kernel
/// ignore router advertisements, host-wide).
#[derive(Debug)]
pub struct Changed {
    path: String,
    was: String,
}

fn write(path: &str, value: &str) -> std::io::Result<Option<String>> {
    let current = std::fs::read_to_string(path)?;
    let current = current.trim();
    if current == value {
        return Ok(None);
    }
    std::fs::write(path, value)?;
    Ok(Some(current.to_owned()))
}

fn set(path: &str, value: &str, changed: &mut Vec<Changed>) -> Result<(), String> {
    match write(path, value) {
        Ok(Some(was)) => {
            info!(sysctl = path, value, "kernel setting changed");
            changed.push(Changed {
                path: path.to_owned(),
                was,
            });
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// Puts back what `enable_forwarding_for` changed, newest first.
pub fn restore(changed: Vec<Changed>) {
    for c in changed.into_iter().rev() {
        match std::fs::write(&c.path, &c.was) {
            Ok(()) => info!(sysctl = c.path, value = c.was, "kernel setting put back"),
            Err(e) => warn!(sysctl = c.path, "putting back {}: {e}", c.was),
        }
    }
}

/// Enables what `cfg` needs on every interface it attaches to: IPv4
/// forwarding, and IPv6 forwarding when an L4 listener has an IPv6 VIP.
/// Called at start and before each reload is applied, since a reload may
/// add the first IPv6 listener (its flows would otherwise never be
/// routed: `bpf_fib_lookup` refuses). Returns what it changed, for a
/// reload that fails later to put back; one that fails itself puts back
/// what it had changed.
pub fn enable_forwarding_for(cfg: &Config) -> Result<Vec<Changed>, String> {
    let v6 = cfg.l4_listeners().any(|l| l.vip.is_ipv6());
    let mut changed = Vec::new();
    for iface in &cfg.agent.interfaces {
        if let Err(e) = enable_forwarding(iface, v6, &mut changed) {
            restore(changed);
            return Err(format!("interface {iface}: {e}"));
        }
    }
    Ok(changed)
}

/// Enables IPv4 forwarding on `iface`, and IPv6 forwarding when `v6`.
fn enable_forwarding(iface: &str, v6: bool, changed: &mut Vec<Changed>) -> Result<(), String> {
    set(
        &format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
        "1",
        changed,
    )?;
    if v6 {
        set(
            &format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"),
            "1",
            changed,
        )?;
        // The kernel's own IPv6 forwarding path checks the global switch.
        set("/proc/sys/net/ipv6/conf/all/forwarding", "1", changed)?;
    }
    let read = |p: &str| {
        Path::new(p)
            .exists()
            .then(|| std::fs::read_to_string(p).ok())
            .flatten()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    let all = read("/proc/sys/net/ipv4/conf/all/rp_filter");
    let own = read(&format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter"));
    if rp_filter_is_strict(all, own) {
        warn!(
            iface,
            "rp_filter is strict (1): packets the XDP program hands to the kernel before a \
             neighbour is resolved carry FULLNAT source addresses and may be dropped; use 0 or 2"
        );
    }
    Ok(())
}

/// The kernel applies the larger of `conf/all/rp_filter` and the device's
/// own value: strict only when that is 1.
fn rp_filter_is_strict(all: u8, own: u8) -> bool {
    all.max(own) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sysctl -w net.ipv4.conf.all.rp_filter=2` (the README's advice)
    /// makes a device left at 1 loose: no warning for it.
    #[test]
    fn rp_filter_strictness_is_the_larger_of_all_and_the_device() {
        assert!(rp_filter_is_strict(1, 0));
        assert!(rp_filter_is_strict(0, 1));
        assert!(rp_filter_is_strict(1, 1));
        assert!(!rp_filter_is_strict(2, 1));
        assert!(!rp_filter_is_strict(1, 2));
        assert!(!rp_filter_is_strict(0, 0));
        assert!(!rp_filter_is_strict(2, 0));
    }
}
