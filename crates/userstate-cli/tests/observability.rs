//! Observability and settings through the real binary (issue 27):
//! - `serve --otlp-endpoint` exports the request spans over OTLP/gRPC to a collector (one of
//!   our own here, on loopback), as children of the caller's `traceparent`; the JSON log line of
//!   the request carries the same trace id; `/metrics` names the commit the binary was built
//!   from;
//! - flag > environment > config file > default, with `[COMMAND]` tables, `--config` and
//!   `USERSTATE_CONFIG`; a config key that is no flag is a usage error.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;

const BIN: &str = env!("CARGO_BIN_EXE_userstate");

/// An OTLP/gRPC trace collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Running {
    child: Child,
    addr: String,
}

/// Starts `userstate serve` on any free port with `flags`, stderr into `log`.
fn serve(data: &Path, log: &Path, flags: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--data",
        ])
        .arg(data)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(rest) = line.strip_prefix("userstate listening on http://") {
                let addr = rest.split_whitespace().next().unwrap().to_owned();
                return Running { child, addr };
            }
        } else if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "userstate exited early with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no listening line");
}

/// SIGTERM, then waits (bounded) for a clean exit.
fn stop(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = running.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = running.child.kill();
    panic!("userstate did not stop after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_as_children_of_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let running = serve(
        &data,
        &log,
        &["--otlp-endpoint", &otlp, "--log-format", "json"],
    );
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{}", running.addr);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let answer = client
        .get(format!("{base}/v2/users/nobody"))
        .bearer_auth(token.trim())
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .header("x-request-id", "req-otlp-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let answered = answer.headers()["traceparent"].to_str().unwrap().to_owned();
    // Without a traceparent: the exporter's new trace, the same in the answer and the log.
    let answer = client
        .get(format!("{base}/v2/users/nobody"))
        .bearer_auth(token.trim())
        .header("x-request-id", "req-otlp-2")
        .send()
        .await
        .unwrap();
    let own = answer.headers()["traceparent"].to_str().unwrap().to_owned();
    let own_trace = own.split('-').nth(1).unwrap().to_owned();
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop(running);

    // The span, exported at shutdown at the latest, is a child of the caller's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let span = loop {
        let found = collector
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|s| hex(&s.trace_id) == trace && s.name == "request")
            .cloned();
        if let Some(span) = found {
            break span;
        }
        assert!(Instant::now() < deadline, "no span of the trace exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&span.parent_span_id), parent);
    assert_eq!(
        answered,
        format!("00-{trace}-{}-01", hex(&span.span_id)),
        "the answer names the exported span"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !collector
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|s| hex(&s.trace_id) == own_trace && s.parent_span_id.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "no root span of trace {own_trace}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.abort();

    // The request's JSON log line carries the trace id (in its span's fields).
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("req-otlp-1") && l.contains("request not successful"))
        .unwrap_or_else(|| panic!("no line for the request in\n{text}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    let line = text
        .lines()
        .find(|l| l.contains("req-otlp-2") && l.contains("request not successful"))
        .unwrap_or_else(|| panic!("no line for the second request in\n{text}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["span"]["trace_id"], own_trace.as_str(), "{line}");

    // The build: this binary's version and, built in a git checkout, its commit.
    let build = metrics
        .lines()
        .find(|l| l.starts_with("userstate_build_info{"))
        .unwrap_or_else(|| panic!("no build info in\n{metrics}"));
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    if let Some(commit) = std::env::var("USERSTATE_GIT_COMMIT").ok().or_else(git_head) {
        assert!(build.contains(&format!("commit=\"{commit}\"")), "{build}");
    }
}

fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `userstate GLOBAL… rebuild --store memory AFTER…` with `env`; its stdout, or the
/// failure's exit code and stderr.
fn rebuild(global: &[&str], after: &[&str], env: &[(&str, &str)]) -> Result<String, (i32, String)> {
    let mut command = Command::new(BIN);
    command
        .args(global)
        .args(["rebuild", "--store", "memory"])
        .args(after);
    command
        .env_remove("USERSTATE_CONFIG")
        .env_remove("USERSTATE_FORMAT");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap()),
        false => Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )),
    }
}

fn is_json(output: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(output.trim()).is_ok()
}

#[test]
fn flag_over_environment_over_config_file_over_default() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("userstate.toml");
    let path = file.to_str().unwrap();
    let config = ["--config", path];

    // Default: text.
    assert!(!is_json(&rebuild(&[], &[], &[]).unwrap()));
    // The file, a top-level key.
    std::fs::write(&file, "format = \"json\"\n").unwrap();
    assert!(is_json(&rebuild(&config, &[], &[]).unwrap()));
    // `--config=FILE`, `--config` after the command, and USERSTATE_CONFIG name it too.
    assert!(is_json(
        &rebuild(&[&format!("--config={path}")], &[], &[]).unwrap()
    ));
    assert!(is_json(&rebuild(&[], &config, &[]).unwrap()));
    assert!(is_json(
        &rebuild(&[], &[], &[("USERSTATE_CONFIG", path)]).unwrap()
    ));
    // The environment wins over the file, the flag over both.
    let env = [("USERSTATE_FORMAT", "text")];
    assert!(!is_json(&rebuild(&config, &[], &env).unwrap()));
    assert!(is_json(
        &rebuild(&config, &["--format", "json"], &env).unwrap()
    ));
    std::fs::write(&file, "format = \"text\"\n").unwrap();
    let env = [("USERSTATE_FORMAT", "json")];
    assert!(is_json(&rebuild(&config, &[], &env).unwrap()));
    assert!(!is_json(
        &rebuild(&config, &["--format", "text"], &env).unwrap()
    ));

    // A command's table wins over the top level, for that command only.
    std::fs::write(&file, "format = \"text\"\n[rebuild]\nformat = \"json\"\n").unwrap();
    assert!(is_json(&rebuild(&config, &[], &[]).unwrap()));
    std::fs::write(&file, "format = \"json\"\n[verify]\nformat = \"text\"\n").unwrap();
    assert!(is_json(&rebuild(&config, &[], &[]).unwrap()));

    // Mistakes are usage errors naming the file.
    for (text, says) in [
        ("formt = \"json\"\n", "`formt` is not a flag"),
        ("[rebuld]\nformat = \"json\"\n", "`rebuld` is not a command"),
        ("format = \n", "not valid TOML"),
        ("format = \"yaml\"\n", "yaml"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, stderr) = rebuild(&config, &[], &[]).unwrap_err();
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
    let missing = ["--config", "/nonexistent/userstate.toml"];
    let (code, stderr) = rebuild(&missing, &[], &[]).unwrap_err();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/userstate.toml"), "{stderr}");
}

#[test]
fn serve_takes_its_settings_from_the_file_and_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-file");
    let file = tmp.path().join("userstate.toml");
    std::fs::write(
        &file,
        format!(
            "[serve]\ndata = {:?}\nstore = \"file\"\nlisten = \"127.0.0.1:1\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    // The file names the data directory; the listen address comes from the environment over
    // the file's (port 1 would fail); the log format from the environment.
    let log = tmp.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args(["serve"])
        .env("USERSTATE_CONFIG", &file)
        .env("USERSTATE_LISTEN", "127.0.0.1:0")
        .env("USERSTATE_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("userstate listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(!line.contains("127.0.0.1:1 "), "{line}");
    assert!(
        data.join("admin-token").exists(),
        "the file's data directory"
    );
    let running = Running {
        child,
        addr: String::new(),
    };
    stop(running);
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON log lines: {text}"
    );
}
