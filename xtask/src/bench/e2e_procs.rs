//! Processes of the end-to-end benchmark: nginx and iperf3 servers in the
//! backend namespaces (started here, stopped on drop), and the wrk and
//! iperf3 clients with their output parsed.
use std::{
    fs::File,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use slb_tests::Netns;

use crate::cmd::Cmd;

/// A server process started in a namespace; SIGTERM (then SIGKILL) on
/// drop, by its own pid.
pub struct Server {
    child: Child,
    what: String,
}

impl Server {
    fn spawn(ns: &Netns, program: &str, args: &[&str], log: &Path, what: String) -> Result<Server> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // `ip netns exec` execs the program: the child's pid is the server's.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Server { child, what })
    }

    /// Waits until something listens on TCP `port` in `ns`.
    fn wait_listening(&mut self, ns: &Netns, port: u16, log: &Path) -> Result<()> {
        let start = Instant::now();
        loop {
            let out = ns.exec("ss", &["-Hltn", &format!("sport = :{port}")])?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}): {}",
                    self.what,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{} does not listen on port {port} after 10 s", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx in `ns` on port `port` of every address (so also on a VIP held
/// on `lo`): one worker, a 9-byte static response, no access log. Its
/// configuration and logs live in `dir`.
pub fn nginx(ns: &Netns, dir: &Path, port: u16, name: &str) -> Result<Server> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
             fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  \
             server {{\n    listen {port} backlog=4096;\n    default_type text/plain;\n    \
             location / {{ return 200 \"{name}\\n\"; }}\n  }}\n}}\n"
        ),
    )?;
    let log = dir.join("nginx.out");
    let prefix = format!("{d}/");
    let elog = format!("{d}/error.log");
    let mut s = Server::spawn(
        ns,
        "nginx",
        &["-p", &prefix, "-e", &elog, "-c", &conf.to_string_lossy()],
        &log,
        format!("nginx in {}", ns.name),
    )?;
    s.wait_listening(ns, port, &log)?;
    Ok(s)
}

/// `iperf3 -s` in `ns` on `port` of every address.
pub fn iperf3_server(ns: &Netns, dir: &Path, port: u16) -> Result<Server> {
    let log = dir.join(format!("iperf3-{port}.out"));
    let mut s = Server::spawn(
        ns,
        "iperf3",
        &["-s", "-p", &port.to_string()],
        &log,
        format!("iperf3 -s in {}", ns.name),
    )?;
    s.wait_listening(ns, port, &log)?;
    Ok(s)
}

/// `timeout` arguments for a client that should take `seconds`: a client
/// whose peer vanished must not hang the benchmark (iperf3 can spin
/// forever).
fn limit(seconds: u64) -> [String; 4] {
    [
        "timeout".into(),
        "-k".into(),
        "5".into(),
        (seconds + 30).to_string(),
    ]
}

/// What one wrk run reported.
pub struct WrkResult {
    pub per_second: f64,
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx responses.
    pub errors: u64,
}

/// Short connections: wrk with `Connection: close` (one request per TCP
/// connection) against `addr:port` for `seconds`.
pub fn wrk(
    client: &Netns,
    addr: Ipv4Addr,
    port: u16,
    threads: u32,
    connections: u32,
    seconds: u64,
) -> Result<WrkResult> {
    let out = Cmd::new("ip")
        .args(["netns", "exec", &client.name])
        .args(limit(seconds))
        .arg("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["-H", "Connection: close"])
        .arg(format!("http://{addr}:{port}/"))
        .read()?;
    parse_wrk(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
}

fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut per_second = None;
    let mut requests = None;
    let mut errors = 0;
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            per_second = v.trim().parse().ok();
        } else if l.contains(" requests in ") {
            requests = l.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1))
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Some(WrkResult {
        per_second: per_second?,
        requests: requests?,
        errors,
    })
}

/// Bulk TCP throughput: one iperf3 stream from the client to
/// `addr:port` for `seconds`; the receiver's Mbit/s. Retries a few times
/// while the server is still busy with the previous test (or a health
/// check's connection).
pub fn iperf3(client: &Netns, addr: Ipv4Addr, port: u16, seconds: u64) -> Result<f64> {
    let mut last = None;
    for _ in 0..4 {
        let run = Cmd::new("ip")
            .args(["netns", "exec", &client.name])
            .args(limit(seconds))
            .args(["iperf3", "-c"])
            .arg(addr.to_string())
            .args(["-p", &port.to_string(), "-t", &seconds.to_string()])
            .args(["-f", "m", "--connect-timeout", "3000"])
            .read();
        match run {
            Ok(out) => {
                return out
                    .lines()
                    .filter(|l| l.trim_end().ends_with("receiver"))
                    .find_map(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        let i = w.iter().position(|x| *x == "Mbits/sec")?;
                        w.get(i.checked_sub(1)?)?.parse::<f64>().ok()
                    })
                    .with_context(|| format!("no receiver line in iperf3's output:\n{out}"));
            }
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("iperf3 did not run")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output() {
        let out = "Running 5s test @ http://10.10.0.10:80/\n  2 threads and 32 connections\n\
                   \x20 61234 requests in 5.00s, 9.11MB read\n\
                   \x20 Socket errors: connect 0, read 3, write 0, timeout 2\n\
                   Requests/sec:  12246.80\nTransfer/sec:      1.82MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 61234);
        assert_eq!(r.errors, 5);
        assert!((r.per_second - 12246.8).abs() < 1e-6);
    }
}
