//! Command-line interface (SPEC §1). Thin: each command calls a module.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// `slb --version`: the release and the map layout it pins. An agent
/// adopts (and keeps forwarding with) pinned maps only of its own layout,
/// so an operator can tell before an upgrade whether the connection table
/// will be kept (README: "Everyday operations").
fn version() -> &'static str {
    // Leaked once: clap builds the command once per process.
    Box::leak(
        format!(
            "{} (map layout {})",
            env!("CARGO_PKG_VERSION"),
            slb_common::limits::LAYOUT_VERSION
        )
        .into_boxed_str(),
    )
}

#[derive(Parser)]
#[command(
    name = "slb",
    version = version(),
    about = "SLB: XDP L4 load balancer with an L7 proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent in the foreground: load and attach the XDP dataplane,
    /// keep it in step with the configuration (SIGHUP reloads).
    Run {
        #[arg(short, long, default_value = "/etc/slb/slb.toml")]
        config: PathBuf,
        /// On SIGTERM/SIGINT leave the XDP program attached and its maps
        /// pinned, so established flows keep being forwarded; the next
        /// `slb run` adopts that state (hitless restart/upgrade).
        #[arg(long)]
        keep_dataplane: bool,
    },
    /// Serve only the http/https listeners with the L7 proxy: no XDP,
    /// unprivileged where ports (>= 1024) and addresses allow (SIGHUP
    /// reloads).
    Proxy {
        #[arg(short, long, default_value = "/etc/slb/slb.toml")]
        config: PathBuf,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Check a configuration file and print every error with its key path.
    Validate {
        #[arg(short, long, default_value = "/etc/slb/slb.toml")]
        config: PathBuf,
        /// Print the effective configuration (defaults applied) as JSON.
        #[arg(long)]
        print: bool,
    },
    /// Show listeners, backends, health, weights, active flows and counters
    /// of the running agent.
    Status {
        #[command(flatten)]
        agent: AgentSocket,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List the connection table of the running agent, one line per
    /// connection (client, VIP, FULLNAT source, backend, state, idle time,
    /// time to expiry), like `ipvsadm -L -n -c`.
    Flows {
        #[command(flatten)]
        agent: AgentSocket,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Only this listener's connections (by name).
        #[arg(long)]
        listener: Option<String>,
        /// Only connections from this client address (IPv6 also in
        /// brackets, as listed).
        #[arg(long, value_parser = crate::status::parse_address)]
        client: Option<std::net::IpAddr>,
        /// Only connections to this backend: an address, or address:port.
        #[arg(long)]
        backend: Option<crate::status::BackendMatch>,
        /// Also entries that are over (past their timeout, or their
        /// backend's id given to another backend), shown as EXPIRED.
        #[arg(long)]
        all: bool,
        /// At most this many lines (0: all); the count of every match is
        /// printed anyway.
        #[arg(long, default_value_t = crate::status::DEFAULT_LIMIT)]
        limit: usize,
    },
    /// Make the running agent re-read its configuration (like SIGHUP), and
    /// report the outcome: every error of a rejected file is printed.
    Reload {
        #[command(flatten)]
        agent: AgentSocket,
    },
}

/// How the CLI finds the running agent's control socket.
#[derive(clap::Args)]
pub struct AgentSocket {
    /// The agent's configuration file (its `agent.control_socket` is used).
    #[arg(short, long, default_value = "/etc/slb/slb.toml")]
    pub config: PathBuf,
    /// The control socket itself (overrides --config).
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands of the example systemd unit are ones this CLI takes.
    /// Its reload is `slb reload`, not a bare SIGHUP: `systemctl reload`
    /// then waits for the outcome and fails, with the file's errors in the
    /// journal, when the agent rejects the file (a signal always
    /// "succeeds").
    #[test]
    fn the_example_unit_runs_valid_commands() {
        let unit = include_str!("../examples/slb.service");
        let commands: Vec<&str> = unit
            .lines()
            .filter_map(|l| {
                l.strip_prefix("ExecStartPre=")
                    .or_else(|| l.strip_prefix("ExecStart="))
                    .or_else(|| l.strip_prefix("ExecReload="))
            })
            .collect();
        assert_eq!(commands.len(), 3, "{commands:?}");
        for c in &commands {
            let args: Vec<&str> = c.split_whitespace().collect();
            assert!(args[0].ends_with("/slb"), "{c}");
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{c}: {e}");
            }
        }
        // The reload asks the agent the unit started: same file, so same
        // control socket.
        let reload: Vec<&str> = commands[2].split_whitespace().collect();
        assert_eq!(reload[1..], ["reload", "-c", "/etc/slb/slb.toml"]);
        assert!(
            commands[1].contains(" -c /etc/slb/slb.toml"),
            "{commands:?}"
        );
        // `systemctl start`/`restart` wait for the agent to be ready and
        // fail when it exits first (a refused upgrade, an interface
        // missing), instead of reporting success at once.
        assert!(unit.lines().any(|l| l == "Type=notify"), "{unit}");
    }

    /// `slb flows` takes addresses as its listings print them: IPv6 ones
    /// in brackets (`[fd00::2]:41822` shows a client; `[fd00::2]` is what
    /// is left of it without the port), and an IPv4-mapped one as the
    /// IPv4 address the tables hold (it would otherwise match nothing).
    #[test]
    fn flows_filters_take_addresses_as_listed() {
        use crate::status::BackendMatch;
        let flows = |args: &[&str]| match Cli::try_parse_from(["slb", "flows"].iter().chain(args)) {
            Ok(Cli {
                command: Command::Flows {
                    client, backend, ..
                },
                ..
            }) => Ok((client, backend)),
            Ok(_) => panic!("not flows"),
            Err(e) => Err(e.to_string()),
        };
        let v6: std::net::IpAddr = "fd00::2".parse().unwrap();
        let v4: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        for (given, want) in [
            ("fd00::2", v6),
            ("[fd00::2]", v6),
            ("::ffff:10.0.0.2", v4),
            ("[::ffff:10.0.0.2]", v4),
        ] {
            assert_eq!(
                flows(&["--client", given]),
                Ok((Some(want), None)),
                "{given}"
            );
            assert_eq!(
                flows(&["--backend", given]),
                Ok((None, Some(BackendMatch::Addr(want)))),
                "{given}"
            );
        }
        assert_eq!(
            flows(&["--backend", "[::ffff:10.0.0.2]:8080"]),
            Ok((
                None,
                Some(BackendMatch::Socket("10.0.0.2:8080".parse().unwrap()))
            ))
        );
        for bad in ["[10.0.0.2]", "[fd00::2", "fd00::2]", "[fd00::2]:"] {
            assert!(flows(&["--client", bad]).is_err(), "{bad}");
            assert!(flows(&["--backend", bad]).is_err(), "{bad}");
        }
    }
}
