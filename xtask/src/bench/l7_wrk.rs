//! Running wrk and reading its report.
use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context, Result};

use super::procs::{stat_fields, Net, USER_HZ};

/// What one wrk run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub rps: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx
    /// responses.
    pub errors: u64,
    /// CPU time wrk used, seconds.
    pub wrk_cpu: f64,
    /// Busy fraction of each CPU during the run (from /proc/stat).
    pub busy: Vec<f64>,
    /// Fraction of each CPU's time during the run used by processes that
    /// are not part of the benchmark.
    pub foreign: Vec<f64>,
    /// CPU time (user, system) the measured proxy used, seconds.
    pub cpu_time: (f64, f64),
}

/// `wrk -t1 -c<conns> -d<secs>s --latency http://addr/`, pinned to `cpu`,
/// inside the namespace. wrk runs under a shell that prints its own
/// /proc stat afterwards: the children's CPU time there is wrk's.
pub fn run(
    net: &Net,
    cpu: usize,
    conns: usize,
    duration: Duration,
    addr: SocketAddr,
) -> Result<Run> {
    let url = format!("http://{addr}/");
    let mut cmd = net.command(cpu, "sh");
    cmd.args([
        "-c".to_owned(),
        "wrk \"$@\"; rc=$?; cat /proc/$$/stat; exit $rc".to_owned(),
        "sh".to_owned(),
        "-t1".to_owned(),
        format!("-c{conns}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".to_owned(),
        url.clone(),
    ]);
    // wrk exits by itself after the duration; `output` waits for it.
    let out = cmd
        .output()
        .context("running wrk (nsenter … taskset … sh -c wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk {url} failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut r =
        parse(&text).with_context(|| format!("reading the report of wrk {url}:\n{text}"))?;
    // cutime and cstime: fields 16 and 17 of stat, 13 and 14 after the name.
    let stat = text.lines().last().and_then(stat_fields);
    r.wrk_cpu = stat.map_or(0.0, |f| {
        let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        (t(13) + t(14)) as f64 / USER_HZ
    });
    Ok(r)
}

/// Reads Requests/sec, the 99% latency, the request count and the error
/// lines of wrk's `--latency` report.
pub fn parse(text: &str) -> Result<Run> {
    let mut rps = None;
    let mut p99 = None;
    let mut requests = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().context("Requests/sec")?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(duration_us(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    errors += n.parse::<u64>().context("Socket errors")?;
                }
            }
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v
                .trim()
                .parse::<u64>()
                .context("Non-2xx or 3xx responses")?;
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    Ok(Run {
        rps: rps.context("no Requests/sec line")?,
        p99_us: p99.context("no 99% latency line (was --latency given?)")?,
        requests: requests.context("no \"N requests in\" line")?,
        errors,
        wrk_cpu: 0.0,
        busy: Vec::new(),
        foreign: Vec::new(),
        cpu_time: (0.0, 0.0),
    })
}

/// "740.00us", "1.52ms", "2.01s" in microseconds.
fn duration_us(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix("m") {
        (n, 60e6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("latency {v:?} has no unit");
    };
    Ok(num
        .trim()
        .parse::<f64>()
        .with_context(|| format!("latency {v:?}"))?
        * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   386.01us  100.59us   3.27ms   85.86%
    Req/Sec   166.62k     5.84k  175.25k    84.00%
  Latency Distribution
     50%  375.00us
     75%  415.00us
     90%  473.00us
     99%    1.52ms
  828946 requests in 5.00s, 127.28MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 165790.05
Transfer/sec:     25.46MB
";

    #[test]
    fn reads_a_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.rps, 165790.05);
        assert_eq!(r.p99_us, 1520.0);
        assert_eq!(r.requests, 828946);
        assert_eq!(r.errors, 8);
    }

    #[test]
    fn units() {
        assert_eq!(duration_us("740.00us").unwrap(), 740.0);
        assert_eq!(duration_us("2.00s").unwrap(), 2e6);
        assert_eq!(duration_us("1.00m").unwrap(), 60e6);
        assert!(duration_us("12").is_err());
        let no_latency = REPORT.replace("99%", "98%");
        assert!(parse(&no_latency).is_err());
    }
}
