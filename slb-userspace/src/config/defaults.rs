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

// http/https listeners (SPEC §5)
pub const L7_SCHEDULER: super::model::L7Scheduler = super::model::L7Scheduler::Wrr;
/// Cookie inserted by `persistence = { mode = "insert_cookie" }`.
pub const INSERT_COOKIE: &str = "SERVERID";
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const BACKEND_CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(300);
pub const BACKEND_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const BACKEND_RESPONSE_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
pub const CLIENT_IDLE_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
pub const REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
pub const REQUEST_HEADER_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Lower bound of the proxy's timeouts (short ones are for tests).
pub const L7_TIMEOUT_MIN: Duration = Duration::from_millis(10);
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 100;
pub const MAX_REQUESTS_PER_CONNECTION_MAX: u32 = 1_000_000;
/// Request line plus header fields, bytes.
pub const MAX_HEADER_SIZE: u32 = 16_384;
pub const MAX_HEADER_SIZE_MIN: u32 = 1024;
pub const MAX_HEADER_SIZE_MAX: u32 = 1_048_576;
/// Forwarding rules per listener.
pub const MAX_RULES: usize = 20;
/// Named backend groups per listener.
pub const MAX_GROUPS: usize = 20;
/// Name of the listener's own backend list as a rule target.
pub const DEFAULT_GROUP: &str = "default";
pub const RULE_PATH_MAX_LEN: usize = 1024;
