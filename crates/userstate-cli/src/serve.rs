//! `userstate serve`: the HTTP/JSON API on a store, with bearer tokens from a tokens file (or a
//! first-start admin token on an empty data directory), until SIGTERM or ctrl-c.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tracing::{debug, info};
use userstate_server::http::{LagLimit, DEFAULT_MAX_LAG, DEFAULT_MAX_LAG_EVENTS};
use userstate_server::tokens::load_or_bootstrap;
use userstate_server::{shutdown_signal, Server, ServerConfig};

use crate::store::open_store;

/// Options of `userstate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory: the file store (`DATA/events`), the tokens file, the first admin token.
    #[arg(long, default_value = "./userstate-data", env = "USERSTATE_DATA")]
    pub data: PathBuf,
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "USERSTATE_LISTEN")]
    pub listen: SocketAddr,
    /// Tokens file (TOML, or JSON by extension). Default: DATA/tokens.toml, created with an
    /// admin token when the data directory is empty.
    #[arg(long, env = "USERSTATE_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Event store: `file` (durable, in DATA/events), `memory` (lost on exit),
    /// `postgres://…`, or `esdb://…` / `kurrentdb://…`.
    #[arg(long, default_value = "file", env = "USERSTATE_STORE")]
    pub store: String,
    /// How long a GET waits for the read model to reach the caller's writes, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub read_timeout_ms: u64,
    /// `/readyz` answers 503 while the read model is more than this many events behind the
    /// store's head (0: must be caught up; for several nodes on one store).
    #[arg(long, default_value_t = DEFAULT_MAX_LAG_EVENTS, env = "USERSTATE_MAX_LAG_EVENTS")]
    pub max_lag_events: u64,
    /// `/readyz` answers 503 while the oldest event the read model has not applied is older
    /// than this many seconds (0: no limit by age).
    #[arg(long, default_value_t = DEFAULT_MAX_LAG.as_secs_f64(), env = "USERSTATE_MAX_LAG_SECONDS")]
    pub max_lag_seconds: f64,
}

/// Runs the server until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let tokens = load_or_bootstrap(&args.data, args.tokens.as_deref())?;
    info!(tokens = tokens.authenticator.len(), file = %tokens.tokens_path.display(), "tokens loaded");
    let store = open_store(&args.store, &args.data).await?;
    let mut config = ServerConfig::new(args.listen, store, tokens.authenticator);
    config.read_timeout = Duration::from_millis(args.read_timeout_ms);
    config.lag_limit = LagLimit {
        max_events: Some(args.max_lag_events),
        max_age: (args.max_lag_seconds > 0.0)
            .then(|| Duration::try_from_secs_f64(args.max_lag_seconds))
            .transpose()
            .context("--max-lag-seconds")?,
    };
    let server = Server::bind(config).await.context("starting the server")?;
    // Installed before the listening line: a SIGTERM right after it must stop us gracefully.
    let shutdown = shutdown_signal();
    let addr = server.local_addr();
    say(format_args!(
        "userstate listening on http://{addr} (store: {})",
        args.store
    ));
    if let Some(path) = &tokens.created_admin_token {
        print_first_start(&path.display().to_string(), addr);
    }
    server.run(shutdown).await?;
    info!("server stopped; store closed");
    Ok(())
}

fn print_first_start(token_file: &str, addr: SocketAddr) {
    let shown = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    };
    say(format_args!(
        "created an admin token for instance \"default\" in {token_file} (mode 0600)"
    ));
    say(format_args!("try:"));
    say(format_args!(
        "  curl -s -H \"Authorization: Bearer $(cat {token_file})\" -H 'Content-Type: application/json' \\\n    \
         -d '{{\"username\":\"alice\",\"organization\":{{\"orgId\":\"acme\"}}}}' http://{shown}/v2/users/human"
    ));
}

/// Prints a line for whoever started the server. `println!` panics when stdout is gone (the
/// reader of a pipe went away: `userstate serve | head -1`), which stopped a running server;
/// here a failed write is only logged at `debug`, and the server goes on.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        debug!(error = %e, "stdout is closed; a start-up line was not printed");
    }
}
