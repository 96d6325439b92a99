//! Defaults and bounds of the configuration file (SPEC §2, §4).

use std::time::Duration;

use slb_common::limits;

use super::model::{
    CheckProtocol, Forwarding, HttpMethod, Protocol, Scheduler, StatusClass, XdpMode,
};

// [agent]
pub const XDP_MODE: XdpMode = XdpMode::Auto;
pub const PIN_PATH: &str = "/sys/fs/bpf/slb";
pub const METRICS_LISTEN: &str = "127.0.0.1:9470";
pub const CONTROL_SOCKET: &str = "/run/slb/control.sock";
pub const FLOW_TABLE_SIZE: u32 = limits::DEFAULT_FLOW_TABLE_SIZE;
pub const FLOW_TABLE_SIZE_MIN: u32 = 1024;
pub const FLOW_TABLE_SIZE_MAX: u32 = 67_108_864;
pub const MAGLEV_TABLE_SIZE: u32 = limits::DEFAULT_RING_SIZE;
pub const MAGLEV_TABLE_SIZE_MIN: u32 = 1021;
pub const MAGLEV_TABLE_SIZE_MAX: u32 = 1_000_003;
/// `sun_path` holds 108 bytes including the terminating NUL.
pub const CONTROL_SOCKET_MAX_LEN: usize = 107;

// [[listener]]
pub const PROTOCOL: Protocol = Protocol::Tcp;
pub const SCHEDULER: Scheduler = Scheduler::Wrr;
pub const FORWARDING: Forwarding = Forwarding::FullNat;
pub const IDLE_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const IDLE_TIMEOUT_MAX: Duration = Duration::from_secs(86_400);
pub const PERSISTENCE_TIMEOUT: Duration = Duration::from_secs(1000);
pub const PERSISTENCE_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const PERSISTENCE_TIMEOUT_MAX: Duration = Duration::from_secs(86_400);

/// Idle timeout of a listener: 900s tcp, 90s udp, 60s http/https.
pub fn idle_timeout(protocol: Protocol) -> Duration {
    match protocol {
        Protocol::Tcp => Duration::from_secs(900),
        Protocol::Udp => Duration::from_secs(90),
        Protocol::Http | Protocol::Https => Duration::from_secs(60),
    }
}

// [[listener.backend]]
pub const WEIGHT: u32 = 100;
pub const WEIGHT_MAX: u32 = 100;

// health_check
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_secs(1);
pub const CHECK_INTERVAL_MAX: Duration = Duration::from_secs(50);
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
pub const CHECK_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const CHECK_TIMEOUT_MAX: Duration = Duration::from_secs(300);
pub const CHECK_THRESHOLD: u32 = 3;
pub const CHECK_THRESHOLD_MIN: u32 = 2;
pub const CHECK_THRESHOLD_MAX: u32 = 10;
pub const HTTP_METHOD: HttpMethod = HttpMethod::Head;
pub const HTTP_PATH: &str = "/";
pub const HTTP_PATH_MAX_LEN: usize = 80;
pub const HTTP_HOST_MAX_LEN: usize = 253;
pub const HTTP_CODES: [StatusClass; 2] = [StatusClass::S2xx, StatusClass::S3xx];
pub const UDP_PAYLOAD: &str = "slb-probe";
pub const UDP_PAYLOAD_MAX_LEN: usize = 1024;

/// Check protocol when none is given: tcp for tcp listeners, udp for udp
/// listeners, http for http/https listeners.
pub fn check_protocol(protocol: Protocol) -> CheckProtocol {
    match protocol {
        Protocol::Tcp => CheckProtocol::Tcp,
        Protocol::Udp => CheckProtocol::Udp,
        Protocol::Http | Protocol::Https => CheckProtocol::Http,
    }
}
