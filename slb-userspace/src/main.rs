use anyhow::Result;
use clap::Parser;
use slb::{agent, cli};
use std::process::ExitCode;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn validate(path: &std::path::Path, print: bool) -> ExitCode {
    match agent::load_config_for_validate(path) {
        Ok(cfg) => {
            if print {
                match serde_json::to_string_pretty(&cfg) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cannot print the configuration: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            eprintln!("{}: ok ({} listeners)", path.display(), cfg.listeners.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Validate { config, print } => validate(&config, print),
        cli::Command::Run { config } => {
            init_logging();
            let result: Result<()> = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(agent::run(&config)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("slb: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
