//! Messages on the control socket (one JSON line each way).
use crate::status::{FlowFilter, FlowList, Snapshot};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Status,
    Reload,
    /// The connection table (`slb flows`).
    Flows {
        filter: FlowFilter,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Status(Snapshot),
    Flows(FlowList),
    Reloaded {
        generation: u64,
    },
    /// The request failed; `errors` has one line per problem (for a
    /// rejected reload: every configuration error with its key path).
    Error {
        errors: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_single_json_lines() {
        let flows = Request::Flows {
            filter: FlowFilter {
                client: Some("10.0.0.2".parse().unwrap()),
                backend: Some("[fd00::1]:80".parse().unwrap()),
                ..Default::default()
            },
        };
        for r in [Request::Status, Request::Reload, flows] {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        let e = Response::Error {
            errors: vec!["listener[0].port: must be 1..=65535".into()],
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), e);
    }
}
