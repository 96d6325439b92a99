//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): a datagram
//! `READY=1` to the socket named by `$NOTIFY_SOCKET` once the agent serves.
//! Without it `systemctl start`/`restart` report success as soon as the
//! process exists, also for an agent that exits a moment later (a refused
//! upgrade, a missing interface).
use std::{
    ffi::OsStr,
    os::unix::{ffi::OsStrExt, net::UnixDatagram},
    path::Path,
};

/// Tells the service manager that the agent is ready, when one asked
/// (`$NOTIFY_SOCKET` set); a failure is logged, not fatal: the agent
/// serves all the same.
pub fn ready() {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = send(&socket, "READY=1") {
            tracing::warn!(
                "telling systemd the agent is ready (NOTIFY_SOCKET={}): {e}",
                Path::new(&socket).display()
            );
        }
    }
}

/// Sends `state` to `socket`: a path, or an abstract name written with a
/// leading `@` (as systemd usually gives it).
fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), Path::new(socket))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("slb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let at_path = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = at_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("slb-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_sock = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = abstract_sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
