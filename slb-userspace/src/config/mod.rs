//! The agent's configuration file (SPEC §2, §4): parsing and validation.
//!
//! No network I/O. Files read: the configuration ([`load`]) and the PEM
//! files of https listeners (checked by validation, see `l7`).
//!
//! Two stages: serde reads the TOML into lenient `raw` types through
//! `serde_path_to_error`, so a structural problem (unknown key, wrong TOML
//! type) is reported with its key path (`read`: every one, the rest of the
//! file still read); then `validate` turns the raw values into the
//! [`Config`] model, collecting every semantic error with its key path
//! (`listener[1].backend[0].weight: must be 0..=100 (got 150)`). Only a TOML
//! syntax error stops before validation.

mod agent;
pub mod defaults;
mod duration;
mod error;
mod health;
mod l7;
mod listener;
mod model;
mod raw;
mod read;
mod validate;
mod values;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod l7_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;

/// Parses and validates a configuration. On failure, every error found.
/// Relative certificate paths are taken from the current directory.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let read = read::read_toml(text)?;
    let validated = validate::validate(&read.raw, None, false);
    read.merge(validated)
}

/// Like [`parse`], with relative certificate paths taken from `base` (the
/// configuration file's directory).
pub fn parse_in(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    parse_file(text, Some(base), false)
}

/// `certificates_required`: an https listener without a certificate is an
/// error too (see [`Config::require_certificates`]), reported with the
/// file's other errors.
fn parse_file(
    text: &str,
    base: Option<&Path>,
    certificates_required: bool,
) -> Result<Config, ConfigErrors> {
    let read = read::read_toml(text)?;
    let validated = validate::validate(&read.raw, base, certificates_required);
    read.merge(validated)
}

/// The effective configuration as `slb validate --print` shows it: every
/// default applied, in the shape of the file, so that it reads back (as
/// TOML) to the same configuration. The settings only http/https listeners
/// have are keys of the listener, as in the file (the model holds them
/// apart, under `l7`), and replace the stand-ins the shared fields hold
/// there for the planner (`scheduler`); the fields only tcp/udp listeners
/// have are left out of them. Absent optional values are left out (TOML has
/// no null); a health check turned off is `{ "enabled": false }`.
pub fn effective_json(cfg: &Config) -> Result<serde_json::Value, serde_json::Error> {
    let mut v = serde_json::to_value(cfg)?;
    if let Some(listeners) = v.get_mut("listener").and_then(|l| l.as_array_mut()) {
        for l in listeners {
            let Some(fields) = l.as_object_mut() else {
                continue;
            };
            if let Some(serde_json::Value::Object(l7)) = fields.remove("l7") {
                for l4_only in ["scheduler", "persistence", "forwarding"] {
                    fields.remove(l4_only);
                }
                fields.extend(l7);
            }
            if fields.get("health_check").is_some_and(|h| h.is_null()) {
                fields.insert(
                    "health_check".to_owned(),
                    serde_json::json!({ "enabled": false }),
                );
            }
        }
    }
    drop_nulls(&mut v);
    Ok(v)
}

/// Removes the object members whose value is null, at any depth.
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(fields) => {
            fields.retain(|_, x| !x.is_null());
            fields.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The control socket a configuration file names (`agent.control_socket`,
/// or the default), read leniently: the rest of the file need not be
/// valid. `slb status` and `slb reload` must reach the agent while the
/// operator is still fixing the file (and `reload` is how the agent's own
/// report of every error is asked for).
pub fn control_socket_of(path: &Path) -> Result<std::path::PathBuf, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the configuration file: {e}"))?;
    let value: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not TOML: {}", e.message()))?;
    match value.get("agent").and_then(|a| a.get("control_socket")) {
        None => Ok(std::path::PathBuf::from(defaults::CONTROL_SOCKET)),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(std::path::PathBuf::from(s)),
        Some(_) => Err("agent.control_socket: must be a path".to_owned()),
    }
}

/// Reads and parses the file at `path`, as the agent, the proxy and `slb
/// validate` take it: every https listener needs a certificate (reported
/// with every other error of the file, not after they are fixed). A file
/// that cannot be read is an error whose `path` is the file's path.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(
            path.display().to_string(),
            format!("cannot read the configuration file: {e}"),
        )
    })?;
    parse_file(&text, path.parent(), true)
}

impl Config {
    /// Checks what `slb run` needs beyond a valid file: the XDP program must
    /// have an interface to attach to. (`slb proxy` does not call this.)
    pub fn require_dataplane(&self) -> Result<(), ConfigErrors> {
        if self.agent.interfaces.is_empty() {
            return Err(ConfigErrors::one(
                "agent.interfaces",
                "at least one interface is required to attach the XDP program \
                 (`slb proxy` serves http/https listeners without one)",
            ));
        }
        Ok(())
    }

    /// Checks what the L7 proxy needs beyond what [`parse`] checks: every
    /// `https` listener has a certificate. (A configuration from [`load`]
    /// has passed this check already.)
    pub fn require_certificates(&self) -> Result<(), ConfigErrors> {
        let errors: Vec<ConfigError> = self
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.protocol == Protocol::Https
                    && l.l7.as_ref().is_none_or(|s| s.certificates.is_empty())
            })
            .map(|(i, _)| {
                ConfigError::new(
                    format!("listener[{i}].certificate"),
                    validate::NO_CERTIFICATE,
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors { errors })
        }
    }

    /// The listeners served by the XDP dataplane (`tcp`, `udp`).
    pub fn l4_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter().filter(|l| l.protocol.is_l4())
    }

    /// The listeners served by the proxy (`http`, `https`).
    pub fn l7_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter().filter(|l| l.protocol.is_l7())
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}
