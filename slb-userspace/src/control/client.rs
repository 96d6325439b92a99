//! The CLI side of the control socket (blocking: the CLI has no runtime).
use super::protocol::{Request, Response};
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path}: {source} (is `slb run` running, and is this its control_socket?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent at {path}: {reason}")]
    Exchange { path: PathBuf, reason: String },
}

/// Sends one request and waits for the answer.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let fail = |reason: String| ClientError::Exchange {
        path: path.to_owned(),
        reason,
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(answer.trim()).map_err(|e| fail(format!("bad answer: {e}")))
}
