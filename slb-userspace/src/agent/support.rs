//! Features the configuration can express but this build's `slb run` does
//! not serve yet. Refusing them up front beats accepting a config and
//! silently doing something else.
use crate::config::{Config, ConfigError, ConfigErrors, Forwarding, Scheduler};

pub fn check(cfg: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let at = |key: &str| format!("listener[{i}].{key}");
        if l.protocol.is_l7() {
            continue;
        }
        if l.scheduler == Scheduler::Wlc {
            errors.push(ConfigError::new(
                at("scheduler"),
                "wlc is not supported yet",
            ));
        }
        if matches!(l.forwarding, Some(Forwarding::Nat | Forwarding::Dr)) {
            errors.push(ConfigError::new(
                at("forwarding"),
                format!(
                    "{} is not supported yet (fullnat is)",
                    l.forwarding.map_or("", |f| f.as_str())
                ),
            ));
        }
        if l.persistence.is_some() {
            errors.push(ConfigError::new(
                at("persistence"),
                "persistence is not supported yet",
            ));
        }
        if l.acl.is_some() {
            errors.push(ConfigError::new(at("acl"), "acl is not supported yet"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { errors })
    }
}
