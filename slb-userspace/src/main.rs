use anyhow::Result;
use clap::Parser;
use slb::{agent, cli, control, status};
use std::process::ExitCode;

/// The log filter without `RUST_LOG`. rustls warns of what a TLS client
/// did wrong (an invalid SNI, an unexpected message, a warning alert): one
/// line per connection that any client can provoke, so not at the default
/// level (nginx logs client handshake errors at `info` for the same
/// reason). Failed handshakes are counted
/// (`slb_l7_tls_handshake_failures_total`) and logged at `debug`.
const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Writes `text` to stdout. A reader that went away (`slb flows | head`)
/// ends the command quietly and successfully, as it does for other Unix
/// tools, instead of a panic with a backtrace.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slb: writing the output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path, print: bool) -> ExitCode {
    match agent::load_config_for_validate(path) {
        Ok(cfg) => {
            if print {
                match slb::config::effective_json(&cfg)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                {
                    Ok(s) => {
                        if emit(&format!("{s}\n")) != ExitCode::SUCCESS {
                            return ExitCode::FAILURE;
                        }
                    }
                    Err(e) => {
                        eprintln!("cannot print the configuration: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            // Loaded all the same (as nginx does), but worth knowing
            // before a reload puts them in service.
            for w in slb::l7::tls::certificate_warnings(&cfg, std::time::SystemTime::now()) {
                eprintln!("warning: {w}");
            }
            let n = cfg.listeners.len();
            let noun = if n == 1 { "listener" } else { "listeners" };
            eprintln!("{}: ok ({n} {noun})", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// The control socket named by `--control-socket`, or by the config file.
fn socket_path(a: &cli::AgentSocket) -> Result<std::path::PathBuf, String> {
    if let Some(p) = &a.control_socket {
        return Ok(p.clone());
    }
    slb::config::control_socket_of(&a.config).map_err(|e| {
        format!(
            "{}: cannot find the control socket: {e}",
            a.config.display()
        )
    })
}

/// Prints an answer as pretty JSON or as its table.
fn show<T: serde::Serialize>(json: bool, value: &T, table: fn(&T) -> String) -> ExitCode {
    if !json {
        return emit(&table(value));
    }
    match serde_json::to_string_pretty(value) {
        Ok(text) => emit(&format!("{text}\n")),
        Err(e) => {
            eprintln!("slb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `slb status` / `slb flows` / `slb reload`: one request to the running
/// agent.
fn ask(a: &cli::AgentSocket, req: control::Request, json: bool) -> ExitCode {
    let path = match socket_path(a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("slb: {e}");
            return ExitCode::FAILURE;
        }
    };
    match control::request(&path, &req, std::time::Duration::from_secs(30)) {
        Ok(control::Response::Status(s)) => show(json, &s, status::render_table),
        Ok(control::Response::Flows(list)) => show(json, &list, status::render_flows),
        Ok(control::Response::Reloaded { generation }) => emit(&format!(
            "reloaded (configuration generation {generation})\n"
        )),
        Ok(control::Response::Error { errors }) => {
            eprintln!("slb: the agent refused:");
            for e in errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("slb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `slb run` / `slb proxy`: the agent on a tokio runtime.
fn serve(config: &std::path::Path, opts: agent::RunOptions) -> ExitCode {
    serve_with(config, opts, None)
}

fn serve_with(
    config: &std::path::Path,
    opts: agent::RunOptions,
    workers: Option<usize>,
) -> ExitCode {
    init_logging();
    // One worker: everything on this thread, without the work-stealing
    // scheduler's cross-thread wake-ups.
    let mut rt = if workers.is_some_and(|n| n <= 1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let Some(n) = workers.filter(|&n| n > 1) {
        rt.worker_threads(n);
    }
    let result: Result<()> = rt
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(agent::run(config, opts)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Validate { config, print } => validate(&config, print),
        cli::Command::Status { agent, json } => ask(&agent, control::Request::Status, json),
        cli::Command::Reload { agent } => ask(&agent, control::Request::Reload, false),
        cli::Command::Flows {
            agent,
            json,
            listener,
            client,
            backend,
            all,
            limit,
        } => {
            let filter = status::FlowFilter {
                listener,
                client,
                backend,
                all,
                limit,
            };
            ask(&agent, control::Request::Flows { filter }, json)
        }
        cli::Command::Run {
            config,
            keep_dataplane,
        } => serve(
            &config,
            agent::RunOptions {
                mode: agent::Mode::Full,
                keep_dataplane,
            },
        ),
        cli::Command::Proxy { config, workers } => {
            let opts = agent::RunOptions {
                mode: agent::Mode::ProxyOnly,
                keep_dataplane: false,
            };
            serve_with(&config, opts, workers)
        }
    }
}
