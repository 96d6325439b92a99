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
    #[error("cannot reach the agent at {path}: {}", connect_hint(path, source))]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent at {path}: {reason}")]
    Exchange { path: PathBuf, reason: String },
}

/// What a failed connect means for the operator, the usual causes named.
fn connect_hint(path: &Path, e: &std::io::Error) -> String {
    use std::{io::ErrorKind, os::unix::fs::FileTypeExt};
    // connect(2) on a regular file or a directory also fails with
    // ECONNREFUSED: told apart here, since "left from one that stopped"
    // invites deleting what may be the configuration file itself.
    if e.kind() == ErrorKind::ConnectionRefused {
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.file_type().is_socket() {
                let what = if meta.is_dir() {
                    "a directory"
                } else {
                    "a file"
                };
                return format!(
                    "it is {what}, not a socket (give --control-socket the agent's \
                     control_socket, or its configuration file with -c)"
                );
            }
        }
    }
    match e.kind() {
        ErrorKind::NotFound => "no such socket: no agent is running with this control_socket \
             (`slb run` or `slb proxy`; give its -c file or --control-socket)"
            .to_owned(),
        ErrorKind::ConnectionRefused => "nothing answers on it: the agent is not running \
             (the socket file is left from one that stopped)"
            .to_owned(),
        ErrorKind::PermissionDenied => "permission denied: the control socket is for the \
             agent's user only (mode 0600); run this as that user, usually root"
            .to_owned(),
        _ => format!("{e} (is the agent running, and is this its control_socket?)"),
    }
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
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => fail(format!(
                "no answer within {}s (the agent is busy or stuck)",
                timeout.as_secs()
            )),
            _ => fail(e.to_string()),
        })?;
    if answer.is_empty() {
        return Err(fail(
            "the agent closed the connection without an answer".into(),
        ));
    }
    serde_json::from_str(answer.trim()).map_err(|e| fail(format!("bad answer: {e}")))
}
