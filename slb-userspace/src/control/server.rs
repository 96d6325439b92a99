//! The agent side of the control socket.
use super::protocol::{Request, Response};
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

/// A request waiting for the agent's main loop to answer it.
pub type Pending = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {reason}")]
    Socket { path: PathBuf, reason: String },
}

/// The bound control socket. Dropping it (or [`Serving::close`]) stops
/// answering and removes the socket file, so an agent that gives up after
/// binding leaves nothing behind for `slb status` to hang on.
pub struct Serving {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Serving {
    /// Stops answering and removes the socket file.
    pub fn close(self) {}
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %self.path.display(), error = %e, "removing the control socket");
            }
        }
    }
}

/// Binds the socket (replacing a stale one left by a crash, refusing to
/// steal one a running agent still answers on) and forwards requests to
/// `to_agent`.
pub async fn serve(path: &Path, to_agent: mpsc::Sender<Pending>) -> Result<Serving, ControlError> {
    let fail = |reason: String| ControlError::Socket {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating its directory: {e}")))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(fail(
                "another agent is answering on it; stop it first (nothing was changed)".into(),
            ));
        }
        std::fs::remove_file(path).map_err(|e| fail(format!("removing the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    // Status and reload are for the operator (root) only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(e.to_string()))?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let to_agent = to_agent.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, to_agent).await {
                            debug!(error = %e, "control connection failed");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "control socket accept failed"),
            }
        }
    });
    Ok(Serving {
        task,
        path: path.to_owned(),
    })
}

async fn handle(stream: UnixStream, to_agent: mpsc::Sender<Pending>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            if to_agent.send((req, tx)).await.is_err() {
                Response::Error {
                    errors: vec!["the agent is shutting down".into()],
                }
            } else {
                rx.await.unwrap_or(Response::Error {
                    errors: vec!["the agent dropped the request".into()],
                })
            }
        }
        Err(e) => Response::Error {
            errors: vec![format!("bad request: {e}")],
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}
