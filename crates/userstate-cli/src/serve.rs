//! `userstate serve`: the HTTP/JSON API on a store, with bearer tokens from a tokens file (or a
//! first-start admin token on an empty data directory), the tokens kept in the store
//! (`userstate token …`, followed while serving; on the embedded stores reached through
//! `DATA/admin.sock`) and, optionally, JWTs verified against a JWKS, until SIGTERM or ctrl-c.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tracing::{debug, error, info, warn};
use userstate_server::delivery::{self, Delivery, DeliveryOptions};
use userstate_server::http::{LagLimit, DEFAULT_MAX_LAG, DEFAULT_MAX_LAG_EVENTS};
use userstate_server::jwt::{JwksSource, JwtAuthenticator, JwtConfig, RefreshPolicy};
use userstate_server::server::DEFAULT_MAX_CONNECTIONS;
use userstate_server::store_tokens::REFRESH_EVERY;
use userstate_server::tokens::load_or_bootstrap;
use userstate_server::{shutdown_signal, Chain, Server, ServerConfig, StoreTokens};

use crate::store::open_store;

/// Options of `userstate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory: the file store (`DATA/events`), the tokens file, the first admin token,
    /// the admin socket (`DATA/admin.sock`, while serving an embedded store).
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
    /// On SIGTERM or ctrl-c, how long in-flight requests may take before the connections left
    /// are closed (`30s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "USERSTATE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
    /// Connections served at once; past it new connections wait to be accepted (or are refused
    /// once the listen backlog is full), and established clients keep being served.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..), env = "USERSTATE_MAX_CONNECTIONS")]
    pub max_connections: u32,
    /// A request header must arrive within this (from the connection's accept, or from its
    /// first byte on a keep-alive connection), or the connection is closed.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, env = "USERSTATE_HEADER_TIMEOUT")]
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    #[arg(long, default_value = "60s", value_parser = parse_timeout, env = "USERSTATE_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// Also accept JWT bearer tokens whose `iss` is this (with --jwt-audience and --jwks).
    #[arg(long, env = "USERSTATE_JWT_ISSUER", requires_all = ["jwt_audience", "jwks"])]
    pub jwt_issuer: Option<String>,
    /// The audience (`aud`) a JWT must name.
    #[arg(long, env = "USERSTATE_JWT_AUDIENCE", requires_all = ["jwt_issuer", "jwks"])]
    pub jwt_audience: Option<String>,
    /// The keys JWTs are signed with: a JWKS file, or an `https://` URL (cached, fetched again
    /// after 5 minutes and on an unknown `kid`, at most every 10 s).
    #[arg(long, env = "USERSTATE_JWKS", requires_all = ["jwt_issuer", "jwt_audience"])]
    pub jwks: Option<String>,
    /// Delivery targets (TOML: `[[webhook]]`, `[[nats]]`; docs/OPERATIONS.md), reloaded on
    /// SIGHUP (a bad file keeps the targets running and logs why).
    #[arg(long, env = "USERSTATE_DELIVERY")]
    pub delivery: Option<PathBuf>,
    /// This node's name in the delivery leases (default: random per process). Two processes
    /// must never share one.
    #[arg(long, env = "USERSTATE_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a delivery lease lasts unless renewed: how long another node waits to take
    /// over the targets of a node that died.
    #[arg(long, default_value = "15s", value_parser = parse_timeout, env = "USERSTATE_DELIVERY_LEASE")]
    pub delivery_lease: Duration,
    /// How many events behind the store head a reader of GET /v2/events (or the streaming
    /// RPC) may fall before it gets an error and its stream ends.
    #[arg(long, default_value_t = userstate_server::feed::DEFAULT_FEED_MAX_LAG, env = "USERSTATE_FEED_MAX_LAG")]
    pub feed_max_lag: u64,
    /// Export the request spans (OpenTelemetry) over OTLP/gRPC to this collector, e.g.
    /// `http://127.0.0.1:4317`. Off by default; the trace ids are in the log lines either way.
    #[arg(long, value_name = "URL", env = "USERSTATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The git commit the binary was built from (build.rs), or `unknown`.
pub const GIT_COMMIT: &str = match option_env!("USERSTATE_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// A timeout flag: a duration ([`parse_duration`]) other than zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout.is_zero() {
        return Err("a timeout of 0 would close every connection at once".to_owned());
    }
    Ok(timeout)
}

/// A duration flag: a non-negative number with a unit `ms`, `s`, `m` or `h` (`30s`, `500ms`,
/// `1.5m`); a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Runs the server until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let tokens = load_or_bootstrap(&args.data, args.tokens.as_deref())?;
    info!(tokens = tokens.authenticator.len(), file = %tokens.tokens_path.display(), "tokens loaded");
    let store = open_store(&args.store, &args.data).await?;
    // Tokens kept in the store (`userstate token …`), followed while serving.
    let store_tokens = StoreTokens::start(store.clone(), REFRESH_EVERY)
        .await
        .context("reading the tokens kept in the store")?;
    info!(tokens = store_tokens.len(), "store tokens loaded");
    let mut authenticator = Chain::new()
        .with(tokens.authenticator.shared())
        .with(Arc::new(store_tokens.clone()));
    if let (Some(issuer), Some(audience), Some(jwks)) =
        (&args.jwt_issuer, &args.jwt_audience, &args.jwks)
    {
        let jwt = JwtAuthenticator::load(JwtConfig {
            issuer: issuer.clone(),
            audience: audience.clone(),
            jwks: JwksSource::parse(jwks),
            refresh: RefreshPolicy::default(),
        })
        .await
        .context("--jwks")?;
        authenticator = authenticator.with(Arc::new(jwt));
    }
    let mut config = ServerConfig::new(args.listen, store.clone(), authenticator);
    config.read_timeout = Duration::from_millis(args.read_timeout_ms);
    config.lag_limit = LagLimit {
        max_events: Some(args.max_lag_events),
        max_age: (args.max_lag_seconds > 0.0)
            .then(|| Duration::try_from_secs_f64(args.max_lag_seconds))
            .transpose()
            .context("--max-lag-seconds")?,
    };
    config.shutdown_grace = args.shutdown_grace;
    config.max_connections = args.max_connections as usize;
    config.header_timeout = args.header_timeout;
    config.idle_timeout = args.idle_timeout;
    config.feed_max_lag = args.feed_max_lag;
    // A bad delivery file at start is an error (a reload keeps the old targets instead).
    let targets = match &args.delivery {
        Some(path) => Some(delivery::load(path)?),
        None => None,
    };
    let server = Server::bind(config).await.context("starting the server")?;
    // The embedded stores live in this process: `userstate token …` reaches them here.
    #[cfg(unix)]
    let _admin = match args.store.as_str() {
        "file" | "memory" => {
            let engine = userstate::Engine::new(store.clone());
            let bound =
                userstate_server::admin::AdminSocket::bind(&args.data, engine, store_tokens).await;
            bound
                .map_err(|e| warn!(error = %e, "no admin socket: `userstate token` cannot reach this server"))
                .ok()
        }
        _ => None,
    };
    let delivery = match targets {
        Some(targets) => {
            let mut options = DeliveryOptions {
                lease: args.delivery_lease,
                ..DeliveryOptions::default()
            };
            if let Some(node) = &args.node_id {
                options.node = node.clone();
            }
            info!(node = %options.node, targets = targets.len(), "delivery targets loaded");
            let delivery = Arc::new(Delivery::new(
                server.state().service().store().clone(),
                server.state().metrics(),
                options,
            ));
            delivery.apply(targets).await;
            let path = args.delivery.clone().unwrap_or_default();
            // Installed before the listening line: a SIGHUP after it must reload, not kill us.
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(hangups) => {
                    tokio::spawn(reload_on_sighup(delivery.clone(), path, hangups));
                }
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGHUP; the delivery file will not be reloaded")
                }
            }
            Some(delivery)
        }
        None => None,
    };
    server
        .state()
        .metrics()
        .set_build_info(env!("CARGO_PKG_VERSION"), GIT_COMMIT);
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
    if let Some(delivery) = delivery {
        delivery.stop().await;
    }
    info!("server stopped; store closed");
    Ok(())
}

/// Reloads the delivery file on every SIGHUP: a valid file replaces the targets (unchanged
/// ones keep running), a bad one is logged and changes nothing.
async fn reload_on_sighup(
    delivery: Arc<Delivery>,
    path: PathBuf,
    mut hangups: tokio::signal::unix::Signal,
) {
    while hangups.recv().await.is_some() {
        match delivery::load(&path) {
            Ok(targets) => {
                info!(file = %path.display(), targets = targets.len(), "delivery file reloaded");
                delivery.apply(targets).await;
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "delivery file not reloaded; keeping the targets running")
            }
        }
    }
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
    say(format_args!("{}", first_start_example(token_file, shown)));
}

/// The `curl` line printed on first start. The username is made by the shell each time the
/// line runs (`user-` and 8 random hex digits): pasted twice, or beside README's example, it
/// never meets a name already taken.
fn first_start_example(token_file: &str, addr: SocketAddr) -> String {
    format!(
        "  curl -s -H \"Authorization: Bearer $(cat {token_file})\" -H 'Content-Type: application/json' \\\n    \
         -d '{{\"username\":\"user-'$(od -An -N4 -tx1 /dev/urandom | tr -d ' \\n')'\",\"organization\":{{\"orgId\":\"acme\"}}}}' \
         http://{addr}/v2/users/human"
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use userstate_server::server::{
        DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE,
    };

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_limits_default_to_the_servers_defaults() {
        let args = Cli::parse_from(["userstate"]).serve;
        assert_eq!(args.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        assert_eq!(args.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(args.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(args.max_connections as usize, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("30s", ms(30_000)),
            ("30", ms(30_000)),
            ("500ms", ms(500)),
            ("1.5m", ms(90_000)),
            ("1h", ms(3_600_000)),
            ("0", ms(0)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["", "s", "10x", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_timeout("1ms"), Ok(ms(1)));
    }
}
