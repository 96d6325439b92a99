//! Limits of this build beyond what the configuration file can express.
use crate::config::{Config, ConfigError, ConfigErrors, Scheduler};
use slb_common::limits::MAX_WLC_BACKENDS;

pub fn check(cfg: &Config) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        if l.protocol.is_l4()
            && l.scheduler == Scheduler::Wlc
            && l.backends.len() > MAX_WLC_BACKENDS as usize
        {
            errors.push(ConfigError::new(
                format!("listener[{i}].scheduler"),
                format!(
                    "wlc compares every backend per new flow and takes at most {MAX_WLC_BACKENDS} backends ({} given); use maglev or wrr",
                    l.backends.len()
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { errors })
    }
}
