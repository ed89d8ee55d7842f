//! Several real `userstate serve` processes on one store, and an HTTP client that speaks to them
//! with a known bearer token (its SHA-256 in a shared tokens file).

#![allow(dead_code)] // each test binary uses a different part

pub mod pg;
pub mod raw;
pub mod scenario;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The bearer token every node accepts.
pub const TOKEN: &str = "us_scale_out_test_token_0123456789abcdef";

/// Writes a tokens file granting [`TOKEN`] everything on instance `default`.
pub fn write_tokens(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.toml");
    let text = format!(
        "[[token]]\nsha256 = \"{}\"\nsubject = \"scale-out\"\ninstance = \"default\"\n\
         instance_grants = [\"user.read\", \"user.write\", \"user.delete\"]\n",
        userstate_server::auth::hash_token(TOKEN)
    );
    std::fs::write(&path, text).expect("write tokens file");
    path
}

/// One `userstate serve` process. Killed (SIGKILL) when dropped.
pub struct Node {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
    args: Vec<String>,
    rust_log: String,
}

impl Node {
    /// Starts `userstate serve` on `store` with `tokens`, any free port, data dir `data`.
    pub fn start(store: &str, tokens: &Path, data: &Path, extra: &[&str]) -> Node {
        Self::start_logging(store, tokens, data, extra, "warn")
    }

    /// [`Node::start`] with `RUST_LOG=rust_log`.
    pub fn start_logging(
        store: &str,
        tokens: &Path,
        data: &Path,
        extra: &[&str],
        rust_log: &str,
    ) -> Node {
        std::fs::create_dir_all(data).expect("data dir");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            store.into(),
            "--tokens".into(),
            tokens.display().to_string(),
            "--data".into(),
            data.display().to_string(),
            "--read-timeout-ms".into(),
            "15000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(args, data.join("serve.log"), rust_log.to_owned())
    }

    /// Starts the same command line again (after a kill).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let again = Self::spawn(self.args.clone(), self.log.clone(), self.rust_log.clone());
        *self = again;
    }

    #[allow(clippy::zombie_processes)] // every path kills and reaps, or hands the child on
    fn spawn(args: Vec<String>, log_path: PathBuf, rust_log: String) -> Node {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_userstate"))
            .args(&args)
            .env("RUST_LOG", &rust_log)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start userstate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("userstate listening on http://") {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        return Node {
                            child,
                            base: format!("http://{addr}"),
                            log: log_path,
                            args,
                            rust_log,
                        };
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                        panic!("userstate exited early with {status}; log:\n{log}");
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("userstate printed no listening line in 30 s");
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (`kill -9`), and reaps the process.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP answer the tests look at.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `x-userstate-position`, when present.
    pub position: Option<u64>,
    /// JSON body (`Null` when none).
    pub body: Value,
}

impl Answer {
    /// The gRPC code of an error body.
    pub fn code(&self) -> Option<i64> {
        self.body["code"].as_i64()
    }
}

/// A client with the token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client with bounded timeouts.
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        Self { http }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let response = request.bearer_auth(TOKEN).send().await?;
        let status = response.status().as_u16();
        let position = response
            .headers()
            .get("x-userstate-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            position,
            body,
        })
    }

    /// Adds user `username` in org `acme` on `node`.
    pub async fn add(&self, node: &str, username: &str) -> Result<Answer, reqwest::Error> {
        let body = json!({ "username": username, "organization": { "orgId": "acme" } });
        self.send(self.http.post(format!("{node}/v2/users/human")).json(&body))
            .await
    }

    /// `POST /v2/users/{id}/{action}` (lock, unlock, deactivate, reactivate).
    pub async fn act(&self, node: &str, id: &str, action: &str) -> Result<Answer, reqwest::Error> {
        let url = format!("{node}/v2/users/{id}/{action}");
        self.send(self.http.post(url).json(&json!({}))).await
    }

    /// `GET /v2/users/{id}`, with `x-userstate-min-position` when `min` is given.
    pub async fn get(
        &self,
        node: &str,
        id: &str,
        min: Option<u64>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self.http.get(format!("{node}/v2/users/{id}"));
        if let Some(min) = min {
            request = request.header("x-userstate-min-position", min);
        }
        self.send(request).await
    }

    /// `method` `path` (`/v2/…`) on `node` with a JSON body.
    pub async fn json(
        &self,
        node: &str,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Answer, reqwest::Error> {
        let url = format!("{node}{path}");
        self.send(self.http.request(method, url).json(body)).await
    }

    /// `GET path` (`/v2/…`) on `node`.
    pub async fn get_path(&self, node: &str, path: &str) -> Result<Answer, reqwest::Error> {
        self.send(self.http.get(format!("{node}{path}"))).await
    }

    /// `GET /readyz` status.
    pub async fn ready(&self, node: &str) -> Result<u16, reqwest::Error> {
        Ok(self
            .http
            .get(format!("{node}/readyz"))
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, node: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(200) = self.ready(node).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node} not ready within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/metrics` text.
    pub async fn metrics(&self, node: &str) -> String {
        let response = self.http.get(format!("{node}/metrics")).send().await;
        match response {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// `(sequence, state)` of a GET answer's user.
pub fn seq_state(answer: &Answer) -> (u64, String) {
    let user = &answer.body["user"];
    let seq = user["details"]["sequence"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sequence in {}", answer.body));
    (seq, user["state"].as_str().unwrap_or_default().to_owned())
}
