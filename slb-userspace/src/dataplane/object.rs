//! The XDP objects built by `build.rs`, embedded in the binary.

/// The load balancer object (`slb-ebpf/src/main.rs`).
pub fn lb_bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slb"))
}

/// The pass-everything object (`slb-ebpf/src/pass.rs`).
pub fn pass_bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slb-pass"))
}

/// Name of the load-balancing program.
pub const PROG_LB: &str = "slb_xdp";
/// Name of the slow path, tail-called by `PROG_LB`.
pub const PROG_SLOW: &str = "slb_xdp_slow";
/// Name of the pass-everything program.
pub const PROG_PASS: &str = "slb_pass";
