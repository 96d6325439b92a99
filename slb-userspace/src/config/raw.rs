//! The file as serde reads it: every key optional, numbers as `i64`, enums,
//! addresses and durations as text, so that serde only rejects what is
//! structurally wrong (unknown key, wrong TOML type) and validation can report
//! every semantic problem at once with its key path.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::duration::RawDuration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub listener: Vec<RawListener>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAgent {
    pub interfaces: Option<Vec<String>>,
    pub xdp_mode: Option<String>,
    pub probe_source: Option<OneOrMany>,
    pub local_addresses: Option<Vec<String>>,
    pub pin_path: Option<String>,
    pub metrics_listen: Option<String>,
    pub flow_table_size: Option<i64>,
    pub maglev_table_size: Option<i64>,
    pub control_socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: Option<String>,
    pub vip: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub scheduler: Option<String>,
    pub forwarding: Option<String>,
    pub idle_timeout: Option<RawDuration>,
    pub persistence: Option<RawPersistence>,
    pub acl: Option<RawAcl>,
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub backend: Vec<RawBackend>,
    // Only for http/https listeners (config/l7.rs).
    pub hash_key: Option<RawHashKey>,
    pub redirect_https: Option<bool>,
    pub gzip: Option<bool>,
    pub backend_connect_timeout: Option<RawDuration>,
    pub backend_response_timeout: Option<RawDuration>,
    pub client_idle_timeout: Option<RawDuration>,
    pub request_header_timeout: Option<RawDuration>,
    pub max_requests_per_connection: Option<i64>,
    pub max_header_size: Option<i64>,
    pub client_ca: Option<String>,
    #[serde(default)]
    pub certificate: Vec<RawCertificate>,
    #[serde(default)]
    pub rule: Vec<RawRule>,
    #[serde(default)]
    pub group: Vec<RawGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHashKey {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub host: Option<String>,
    pub path: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub name: Option<String>,
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistence {
    pub mode: Option<String>,
    pub timeout: Option<RawDuration>,
    /// L7 cookie modes only.
    pub cookie: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcl {
    pub mode: Option<String>,
    pub cidrs: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub enabled: Option<bool>,
    pub protocol: Option<String>,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub healthy_threshold: Option<i64>,
    pub unhealthy_threshold: Option<i64>,
    // http
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub codes: Option<Vec<String>>,
    // udp
    pub payload: Option<String>,
    pub expect: Option<String>,
    pub payload_hex: Option<String>,
    pub expect_hex: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub address: Option<String>,
    pub port: Option<i64>,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
}

/// A string, or an array of strings (`probe_source = "100.64.0.1"` or
/// `probe_source = ["100.64.0.1", "fd00:64::1"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings with the key path of each (`key` or `key[i]`).
    pub(crate) fn items(&self, key: &str) -> Vec<(String, &str)> {
        match self {
            OneOrMany::One(s) => vec![(key.to_owned(), s.as_str())],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("{key}[{i}]"), s.as_str()))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;

        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor)
    }
}
