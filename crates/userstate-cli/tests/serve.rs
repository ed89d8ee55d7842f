//! `userstate serve` as an operator runs it: on an empty data directory it creates the admin
//! token file (mode 0600), prints where it is, serves the API, stops cleanly on SIGTERM, and a
//! second start on the same directory reuses the tokens and finds the users again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Running {
    child: Child,
    addr: String,
    lines: Vec<String>,
    log: PathBuf,
}

/// Starts the binary and reads stdout until the listening line (and the token line, when one
/// is expected).
fn start(data: &Path, expect_token_line: bool) -> Running {
    start_with(data, expect_token_line, &[], None)
}

/// [`start`] with more flags, and at most `open_files` file descriptors (`ulimit -n`).
fn start_with(
    data: &Path,
    expect_token_line: bool,
    flags: &[&str],
    open_files: Option<u32>,
) -> Running {
    let log_path = data.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = match open_files {
        None => Command::new(env!("CARGO_BIN_EXE_userstate")),
        Some(n) => {
            let mut sh = Command::new("sh");
            sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                .arg(env!("CARGO_BIN_EXE_userstate"));
            sh
        }
    };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(log)
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
    let mut lines = Vec::new();
    let mut addr = None;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("userstate exited early with {status}");
            }
            continue;
        };
        if let Some(rest) = line.strip_prefix("userstate listening on http://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        lines.push(line);
        // The example's last line (it continues over two) names the route.
        let token_seen = lines.iter().any(|l| l.contains("/v2/users/human"));
        if addr.is_some() && (!expect_token_line || token_seen) {
            break;
        }
    }
    Running {
        child,
        addr: addr.expect("listening line on stdout"),
        lines,
        log: log_path,
    }
}

/// SIGTERM, then waits (bounded) for a clean exit.
fn stop(mut running: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&running.log).unwrap_or_default();
            assert!(
                status.success(),
                "exit status {status}; the server's log:\n{log}"
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = running.child.kill();
            panic!("userstate did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value, Option<u64>) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let position = resp
        .headers()
        .get("x-userstate-position")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, position)
}

fn token_file_from(lines: &[String]) -> PathBuf {
    let line = lines
        .iter()
        .find(|l| l.starts_with("created an admin token"))
        .expect("token line");
    let path = line
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" (mode 0600)"))
        .expect("token path in the line");
    PathBuf::from(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_a_private_token_serves_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let running = start(&data, true);
    let token_path = token_file_from(&running.lines);
    assert_eq!(token_path, data.join("admin-token"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    let printed = running.lines.join("\n");
    assert!(!printed.contains(&token), "the token itself was printed");
    let tokens_file = std::fs::read_to_string(data.join("tokens.toml")).unwrap();
    assert!(
        !tokens_file.contains(&token),
        "the token itself is in the tokens file"
    );

    let client = reqwest::Client::new();
    let base = format!("http://{}", running.addr);
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, body, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/v2/users/human"),
        &token,
        Some(json!({"userId": "u1", "username": "alice", "organization": {"orgId": "acme"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _, position) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/v2/users/u1/lock"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let position = position.expect("position header");
    let (status, before, _) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}/v2/users/u1"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(before["user"]["state"], "USER_STATE_LOCKED");
    let (status, _, _) = call(
        &client,
        reqwest::Method::GET,
        format!("{base}/v2/users/u1"),
        "wrong",
        None,
    )
    .await;
    assert_eq!(status, 401);
    // At the default level a refused request is logged with its request id, a successful one
    // is not; neither line carries the token.
    for (request_id, bearer, expected) in [
        ("refused-req-7", "not-a-token-secret", 401),
        ("answered-req-8", token.as_str(), 200),
    ] {
        let resp = client
            .get(format!("{base}/v2/users/u1"))
            .bearer_auth(bearer)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected);
    }
    stop(running);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    // Two lines: why authentication failed, and the request's own line.
    let lines = |what: &str| {
        log.lines()
            .find(|l| l.contains("refused-req-7") && l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line for the refused request in {log}"))
    };
    assert!(lines("authentication failed").contains("unknown"), "{log}");
    let refused = lines("request not successful");
    assert!(refused.contains("401"), "{refused}");
    assert!(refused.contains("127.0.0.1:"), "client address: {refused}");
    assert!(
        !log.contains("answered-req-8"),
        "a successful request logged at info: {log}"
    );
    assert!(
        !log.contains("not-a-token-secret"),
        "a presented token is in the log"
    );

    let running = start(&data, false);
    assert!(
        !running
            .lines
            .iter()
            .any(|l| l.contains("created an admin token")),
        "a second admin token was created"
    );
    let base = format!("http://{}", running.addr);
    let resp = client
        .get(format!("{base}/v2/users/u1"))
        .bearer_auth(&token)
        .header("x-userstate-min-position", position.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let after: Value = resp.json().await.unwrap();
    assert_eq!(before, after);
    stop(running);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(!log.contains(&token), "the token is in the log");
}

/// A SIGTERM sent the moment the listening line appears (as an orchestrator stopping a node it
/// just started might) still finds the graceful-shutdown handler: a clean exit, every time.
#[test]
fn sigterm_right_after_the_listening_line_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    for cycle in 0..10 {
        let data = tmp.path().join(format!("data{cycle}"));
        // A fresh directory: wait for the token lines too (printed right after the listening
        // line), so the server never writes to a pipe the test has stopped reading.
        let running = start(&data, true);
        stop(running);
    }
}

/// A server whose stdout is closed before it prints (`userstate serve | head -0`) keeps
/// serving: its start-up lines are lost, not its life. `println!` panicked there (exit 101).
#[test]
fn a_closed_stdout_does_not_stop_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = data.with_extension("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Close the read end at once: every line the server prints meets a broken pipe.
    drop(child.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(60);
    let healthy = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("userstate exited with {status} after its stdout closed; its log:\n{log}");
        }
        let answered = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            use std::io::{Read, Write};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        });
        match answered {
            Ok(answer) => break answer,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the server never answered: {e}"),
        }
    };
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
    // The token lines came after the listening line; the server lived through both.
    assert!(data.join("admin-token").exists());
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let log = log_path.clone();
    stop(Running {
        child,
        addr: format!("127.0.0.1:{port}"),
        lines: Vec::new(),
        log,
    });
}

/// Reads one HTTP/1.1 answer (head and `content-length` body) from `socket`.
fn read_answer(socket: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed before the answer was complete");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// A client holding half a request head and one whose upload stalls do not keep a stopping
/// server (and its store's directory lock) alive: SIGTERM ends the process within the shutdown
/// grace, and a new server starts on the same data directory.
#[test]
fn sigterm_with_stalled_clients_exits_within_the_shutdown_grace() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--shutdown-grace", "1s", "--header-timeout", "60s"];
    let running = start_with(&data, true, &flags, None);
    let token = std::fs::read_to_string(token_file_from(&running.lines)).unwrap();
    let mut half_head = std::net::TcpStream::connect(&running.addr).unwrap();
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut upload = std::net::TcpStream::connect(&running.addr).unwrap();
    upload
        .write_all(
            format!(
                "POST /v2/users/human HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"user",
                token.trim()
            )
            .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut running = running;
    let pid = running.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = running.child.kill();
            panic!("userstate did not exit within 15 s of SIGTERM (grace 1 s)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&running.log).unwrap_or_default();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "the grace was not waited: {log}"
    );
    assert!(log.contains("shutdown grace elapsed"), "{log}");
    // The store's lock went with the process.
    let again = start_with(&data, false, &flags, None);
    stop(again);
    drop((half_head, upload));
}

/// More idle sockets than the server has file descriptors: an established client keeps being
/// served, the idle ones are closed at the header timeout, and a new client gets in.
#[test]
fn idle_sockets_past_the_descriptor_limit_do_not_lock_out_new_clients() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = [
        "--max-connections",
        "16",
        "--header-timeout",
        "1s",
        "--store",
        "memory",
    ];
    let running = start_with(&data, true, &flags, Some(64));
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut established = std::net::TcpStream::connect(&running.addr).unwrap();
    established
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    established.write_all(healthz).unwrap();
    assert!(read_answer(&mut established).starts_with("HTTP/1.1 200"));
    let idle: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(&running.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    established.write_all(healthz).unwrap();
    assert!(read_answer(&mut established).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    let mut fresh = std::net::TcpStream::connect(&running.addr).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    fresh
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_answer(&mut fresh);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(30));
    drop(idle);
    stop(running);
}

/// The answers of a shell snippet of `curl -s` calls: JSON objects one after the other.
fn run_snippet(script: &str) -> Vec<Value> {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for answer in &answers {
        assert!(
            answer.get("code").is_none(),
            "an error answer: {answer}\n{script}"
        );
        assert!(answer["details"]["sequence"].is_string(), "{answer}");
    }
    answers
}

/// README's example and the line `serve` prints on its first start, pasted one after the
/// other, twice, against one server: none meets a user id or username an earlier one took.
#[test]
fn readme_and_first_start_examples_run_in_any_order_repeatedly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let running = start(&data, true);
    let base = format!("http://{}", running.addr);
    let printed = running
        .lines
        .iter()
        .skip_while(|l| l.trim() != "try:")
        .skip(1)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        printed.contains("curl") && printed.contains("/v2/users/human"),
        "{printed}"
    );

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let example = readme
        .split("Then, for example")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("README's example block");
    assert!(
        example.contains("./userstate-data/admin-token"),
        "{example}"
    );
    assert!(example.contains("http://127.0.0.1:8080/"), "{example}");
    let readme_script = example
        .replace("./userstate-data", data.to_str().unwrap())
        .replace("http://127.0.0.1:8080", &base);

    for round in 0..2 {
        let answers = run_snippet(&readme_script);
        assert_eq!(answers.len(), 3, "round {round}: {answers:?}");
        assert_eq!(answers[2]["details"]["sequence"], "3", "round {round}");
        let answers = run_snippet(&printed);
        assert_eq!(answers.len(), 1, "round {round}: {answers:?}");
        assert!(answers[0]["userId"].is_string(), "{answers:?}");
    }
    stop(running);
}

/// `serve --jwt-issuer --jwt-audience --jwks FILE`: a JWT signed by a key of the file is served
/// next to the first-start admin token, an expired one is 401, and the token text is in no log
/// line; a JWKS that cannot be read stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_accepts_jwts_of_the_jwks_flags() {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks = tmp.path().join("jwks.json");
    let doc = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x}]});
    std::fs::write(&jwks, doc.to_string()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |exp: u64| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("k1".into());
        let claims = json!({"iss": "https://idp.test", "aud": "userstate", "sub": "robot",
            "exp": exp, "urn:userstate:grants": {"instance": "default",
            "instanceGrants": ["user.read", "user.write"]}});
        let key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let jwks_arg = jwks.display().to_string();
    let flags = [
        "--jwt-issuer",
        "https://idp.test",
        "--jwt-audience",
        "userstate",
        "--jwks",
        jwks_arg.as_str(),
    ];
    let running = start_with(&data, true, &flags, None);
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let good = sign(now + 600);
    let add = json!({"userId": "j1", "username": "j1", "organization": {"orgId": "acme"}});
    let (status, body, _) = call(
        &client,
        reqwest::Method::POST,
        format!("{base}/v2/users/human"),
        &good,
        Some(add),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let admin = std::fs::read_to_string(token_file_from(&running.lines)).unwrap();
    let url = format!("{base}/v2/users/j1");
    let (status, _, _) = call(
        &client,
        reqwest::Method::GET,
        url.clone(),
        admin.trim(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let expired = sign(now - 3600);
    let (status, body, _) = call(&client, reqwest::Method::GET, url, &expired, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["details"][0]["id"], "AUTH-invalid-token", "{body}");
    let log = running.log.clone();
    stop(running);
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("authentication failed"), "{log}");
    for token in [&good, &expired] {
        assert!(!log.contains(token.as_str()), "a JWT in the log:\n{log}");
    }

    let missing = Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data2"))
        .args(["--jwt-issuer", "i", "--jwt-audience", "a", "--jwks"])
        .arg(tmp.path().join("absent.json"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("JWKS"), "{stderr}");
}
