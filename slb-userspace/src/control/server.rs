//! The agent side of the control socket.
use super::protocol::{Request, Response};
use std::{
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};
use tracing::{debug, warn};

/// How long a client has to send its request line. The CLI sends it at
/// once; a client that connects and says nothing must not hold a task and
/// a file descriptor of the agent for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer (`slb flows --limit 0` can be
/// megabytes; the CLI reads it at once).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A request is one short JSON line; reading stops here, so a client
/// sending without a newline cannot make the agent allocate without end.
const MAX_REQUEST: usize = 64 * 1024;
/// Connections served at once; more are answered with an error and
/// closed, so that no number of clients can use up the agent's file
/// descriptors (which its health checks and the proxy need too).
const MAX_CLIENTS: usize = 32;

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
    // Only a socket nothing answers on is stale: any other file there
    // (control_socket set to a wrong path) is not ours to delete, and a
    // socket we may not connect to may belong to a running agent.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(
                "the path exists and is not a socket; refusing to replace it \
                 (is agent.control_socket right?)"
                    .into(),
            ));
        }
        match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(fail(
                    "another agent is answering on it; stop it first (nothing was changed)".into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .map_err(|e| fail(format!("removing the stale socket: {e}")))?
            }
            Err(e) => {
                return Err(fail(format!(
                    "checking whether an agent answers on it: {e}"
                )))
            }
        }
    }
    // Status and reload are for the operator (root) only: the socket is
    // created with mode 0600 (umask 0177 around bind), not chmod-ed after,
    // which would leave it open to others in between under a lax umask.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(e.to_string()))?;
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Not waited for: a full socket buffer must not
                        // stall the accept loop.
                        let _ = stream.try_write(&answer_line(&error(
                            "too many control connections; try again".into(),
                        )));
                        continue;
                    };
                    let to_agent = to_agent.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, to_agent).await {
                            debug!(error = %e, "control connection failed");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    // Out of file descriptors, say: accept fails again at
                    // once, and retrying without a pause would spin a CPU
                    // and flood the log.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(Serving {
        task,
        path: path.to_owned(),
    })
}

fn error(e: String) -> Response {
    Response::Error { errors: vec![e] }
}

/// The response as one JSON line.
fn answer_line(response: &Response) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty answer would
    // still tell the CLI something is wrong.
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Reads the request line: at most [`MAX_REQUEST`] bytes, within
/// [`REQUEST_TIMEOUT`]. `Err` is the answer to give instead.
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<Request, Response> {
    let mut line = Vec::new();
    let mut limited = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    match tokio::time::timeout(REQUEST_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Err(error(format!(
                "no request within {}s",
                REQUEST_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(e)) => return Err(error(format!("reading the request: {e}"))),
        Ok(Ok(_)) => {}
    }
    if line.len() > MAX_REQUEST {
        return Err(error(format!(
            "bad request: longer than {MAX_REQUEST} bytes"
        )));
    }
    serde_json::from_slice::<Request>(line.trim_ascii())
        .map_err(|e| error(format!("bad request: {e}")))
}

async fn handle(stream: UnixStream, to_agent: mpsc::Sender<Pending>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let response = match read_request(read).await {
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            if to_agent.send((req, tx)).await.is_err() {
                error("the agent is shutting down".into())
            } else {
                rx.await
                    .unwrap_or_else(|_| error("the agent dropped the request".into()))
            }
        }
        Err(refusal) => refusal,
    };
    let out = answer_line(&response);
    tokio::time::timeout(ANSWER_TIMEOUT, async {
        write.write_all(&out).await?;
        write.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// A socket path of its own per test, removed with its directory.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("slb-ctl-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn sock(&self) -> PathBuf {
            self.0.join("control.sock")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Serves `path`, with an "agent" that answers every request.
    async fn agent(path: &Path) -> Serving {
        let (tx, mut rx) = mpsc::channel::<Pending>(8);
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Response::Reloaded { generation: 7 });
            }
        });
        serve(path, tx).await.unwrap()
    }

    /// Everything the agent sends until it closes, or None if it keeps
    /// the connection open without a word for `within`.
    async fn answer(c: &mut UnixStream, within: Duration) -> Option<String> {
        let mut out = Vec::new();
        tokio::time::timeout(within, c.read_to_end(&mut out))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_others_are_answered_meanwhile() {
        let d = Dir::new("idle");
        let _s = agent(&d.sock()).await;
        let mut idle = UnixStream::connect(d.sock()).await.unwrap();
        let mut c = UnixStream::connect(d.sock()).await.unwrap();
        c.write_all(b"{\"command\":\"reload\"}\n").await.unwrap();
        let a = answer(&mut c, Duration::from_secs(2)).await.unwrap();
        assert!(a.contains("\"generation\":7"), "{a}");
        let a = answer(&mut idle, REQUEST_TIMEOUT + Duration::from_secs(3))
            .await
            .expect("a client that sends nothing is disconnected");
        assert!(a.contains("no request"), "{a}");
    }

    #[tokio::test]
    async fn a_huge_request_is_refused_without_being_read_whole() {
        let d = Dir::new("huge");
        let _s = agent(&d.sock()).await;
        let c = UnixStream::connect(d.sock()).await.unwrap();
        let (mut r, mut w) = c.into_split();
        // 64 MiB without a newline: the agent must answer long before.
        tokio::spawn(async move {
            let chunk = vec![b'a'; 1 << 20];
            for _ in 0..64 {
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut out))
            .await
            .expect("the agent stops reading and closes before the client stops sending");
        // The answer, unless the kernel reset the connection for the
        // bytes the agent left unread (it does not drain them).
        match read {
            Ok(_) => {
                let a = String::from_utf8_lossy(&out);
                assert!(a.contains("longer than"), "{a}");
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }

    #[tokio::test]
    async fn clients_over_the_limit_are_told_so_at_once() {
        let d = Dir::new("many");
        let _s = agent(&d.sock()).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CLIENTS {
            idle.push(UnixStream::connect(d.sock()).await.unwrap());
        }
        let mut c = UnixStream::connect(d.sock()).await.unwrap();
        let a = answer(&mut c, Duration::from_secs(2)).await.unwrap();
        assert!(a.contains("too many control connections"), "{a}");
    }

    #[tokio::test]
    async fn a_request_that_is_not_utf8_gets_an_answer() {
        let d = Dir::new("utf8");
        let _s = agent(&d.sock()).await;
        let mut c = UnixStream::connect(d.sock()).await.unwrap();
        c.write_all(b"\xff\xfe{}\n").await.unwrap();
        let a = answer(&mut c, Duration::from_secs(2)).await.unwrap();
        assert!(a.contains("bad request"), "{a}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_not_removed() {
        let d = Dir::new("file");
        std::fs::write(d.sock(), "precious").unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let e = serve(&d.sock(), tx).await.err().expect("refused");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(d.sock()).unwrap(), "precious");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_kept() {
        let d = Dir::new("stale");
        // Bound and closed: the file stays, nothing answers.
        drop(std::os::unix::net::UnixListener::bind(d.sock()).unwrap());
        let s = agent(&d.sock()).await;
        let (tx, _rx) = mpsc::channel(1);
        let e = serve(&d.sock(), tx).await.err().expect("refused");
        assert!(e.to_string().contains("another agent"), "{e}");
        drop(s);
        assert!(!d.sock().exists());
    }
}
