//! The promises of docs/CLI.md a script relies on, through the built binary: every documented
//! exit code is reached by a real failure, every error line names what it is about (the user,
//! the file, the store) and says each cause once, and every `--format` is honoured or refused.

mod cluster;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn userstate(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("USERSTATE_STORE")
        .env_remove("USERSTATE_DATA")
        .output()
        .expect("run the userstate binary")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = userstate(data, args);
    assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The codes of docs/CLI.md's "Exit codes" table.
fn documented_exit_codes() -> BTreeSet<i32> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CLI.md"))
            .unwrap();
    let table = doc
        .split("## Exit codes")
        .nth(1)
        .expect("an exit code section");
    let codes: BTreeSet<i32> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1)?.trim().parse().ok())
        .collect();
    assert!(codes.len() >= 10, "{codes:?}");
    codes
}

/// `userstate serve` on `data` (any free port) until dropped.
struct Serving {
    child: Child,
}

impl Serving {
    /// Serves the store in `data` (which has users already: the tokens file is written
    /// beside it, in `data`'s parent).
    fn start(data: &Path) -> Serving {
        let tokens = cluster::write_tokens(data.parent().unwrap());
        let mut child = Command::new(env!("CARGO_BIN_EXE_userstate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--tokens")
            .arg(tokens)
            .env_remove("USERSTATE_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The store is open once the server listens.
        lines
            .find(|l| {
                l.as_ref()
                    .is_ok_and(|l| l.starts_with("userstate listening on http://"))
            })
            .expect("the listening line")
            .unwrap();
        // Keep reading, so the server never writes into a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Serving { child }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// Every code of docs/CLI.md's table, each by a real failure of the kind it documents.
/// Code 8 (Aborted) needs writers racing on a shared store: it is reached on PostgreSQL by
/// `aborted_after_every_retry_exits_8` below.
#[test]
fn every_documented_exit_code_is_reached_by_a_real_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    let mut reached = BTreeSet::new();
    let mut expect = |out: Output, expected: i32, what: &str| {
        assert_eq!(code(&out), expected, "{what}: {}", stderr(&out));
        reached.insert(expected);
    };
    expect(
        userstate(d, &["user", "add", "alice", "--org", "acme", "--id", "u1"]),
        0,
        "an add",
    );
    let export = dir.path().join("export.jsonl");
    ok(d, &["export", "-o", export.to_str().unwrap()]);
    expect(
        userstate(d, &["import", export.to_str().unwrap()]),
        1,
        "an import into a store that is not empty",
    );
    expect(
        userstate(d, &["user", "frobnicate"]),
        2,
        "an unknown command",
    );
    expect(
        userstate(d, &["verify", "--format", "csv"]),
        2,
        "a format verify does not print",
    );
    expect(
        userstate(d, &["user", "unlock", "u1"]),
        3,
        "an unlock of an active user",
    );
    expect(
        userstate(d, &["user", "lock", "nobody"]),
        4,
        "a missing user",
    );
    expect(
        userstate(d, &["user", "add", "Alice", "--org", "acme"]),
        5,
        "a username taken",
    );
    expect(
        userstate(d, &["audit", "history", "bad id"]),
        6,
        "a malformed user id, parsed before the engine runs",
    );
    expect(
        userstate(d, &["user", "get", "bad id"]),
        6,
        "a malformed user id",
    );
    expect(
        userstate(d, &["user", "lock", "u1", "--as", "u1"]),
        7,
        "a user locking itself",
    );
    {
        let _serving = Serving::start(d);
        // A write needs the store's lock; reads (`user get`, `export`, ...) open it read-only
        // beside the server (tests/online.rs).
        expect(
            userstate(d, &["user", "lock", "u1"]),
            9,
            "a store held by a running serve",
        );
    }
    expect(
        userstate(
            d,
            &[
                "user",
                "get",
                "u1",
                "--store",
                "postgres://nobody@127.0.0.1:1/none",
            ],
        ),
        9,
        "a PostgreSQL server that does not answer",
    );
    // Reached on PostgreSQL, below.
    reached.insert(8);
    assert_eq!(reached, documented_exit_codes(), "docs/CLI.md's table");
}

/// Exit 8: a command whose every attempt loses its race. The racing writer is PostgreSQL
/// itself: a trigger answers every insert into one user's stream with a serialisation failure
/// (40001), as PostgreSQL answers a transaction that lost to a concurrent one, so the engine
/// retries until it gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_after_every_retry_exits_8() {
    let Some(db) = cluster::pg::Database::create("exit8").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let url = db.url.clone();
    let run = move |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--store", &url]);
        userstate(&d, &all)
    };
    let add = run(&["user", "add", "busy", "--org", "acme", "--id", "busy"]);
    assert_eq!(code(&add), 0, "{}", stderr(&add));
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE FUNCTION userstate.always_lose() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.stream LIKE 'user:%:busy' THEN
                 RAISE EXCEPTION 'a concurrent writer won' USING ERRCODE = '40001';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER always_lose BEFORE INSERT ON userstate.events
               FOR EACH ROW EXECUTE FUNCTION userstate.always_lose();",
        )
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || run(&["user", "lock", "busy"]))
        .await
        .unwrap();
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    let line = stderr(&out);
    assert!(
        line.contains("\"busy\"") && line.contains("Aborted"),
        "{line}"
    );
}

/// One error line (`serve` logs before it), naming what it is about, each cause once.
fn assert_error_line(out: &Output, expected_code: i32, names: &[&str]) {
    let all = stderr(out);
    assert_eq!(code(out), expected_code, "{all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{all}");
    let line = errors[0];
    for name in names {
        assert!(line.contains(name), "{name:?} is not named in: {line}");
    }
    let parts: Vec<&str> = line.trim_end().split(": ").collect();
    for pair in parts.windows(2) {
        assert_ne!(pair[0], pair[1], "a cause said twice: {line}");
    }
}

#[test]
fn every_error_names_what_it_is_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    let p = |path: &Path| path.display().to_string();
    ok(d, &["user", "add", "alice", "--org", "acme", "--id", "u1"]);

    // Users and ids.
    let cases: [(&[&str], i32, &str); 6] = [
        (&["user", "get", "bad id"], 6, "bad id"),
        (&["audit", "history", "bad id"], 6, "bad id"),
        (&["user", "lock", "nobody"], 4, "nobody"),
        (&["user", "unlock", "u1"], 3, "u1"),
        (&["user", "add", "ALICE", "--org", "acme"], 5, "ALICE"),
        (&["user", "lock", "u1", "--as", "u1"], 7, "u1"),
    ];
    for (args, expected, name) in cases {
        assert_error_line(&userstate(d, args), expected, &[name]);
    }

    // Files.
    let missing = dir.path().join("missing.jsonl");
    let fresh = dir.path().join("fresh");
    let out = userstate(&fresh, &["import", missing.to_str().unwrap()]);
    assert_error_line(&out, 1, &[&p(&missing)]);
    assert!(!fresh.exists(), "a failed import created {}", p(&fresh));
    let bad = dir.path().join("bad.jsonl");
    let export = dir.path().join("export.jsonl");
    ok(d, &["export", "-o", export.to_str().unwrap()]);
    let first = std::fs::read_to_string(&export).unwrap();
    std::fs::write(&bad, format!("{}{{\"not\":\"an event\"}}\n", first)).unwrap();
    let out = userstate(&fresh, &["import", bad.to_str().unwrap()]);
    let events = first.lines().count() + 1;
    assert_error_line(&out, 1, &[&p(&bad), &format!("line {events}")]);
    let out = userstate(d, &["import", export.to_str().unwrap()]);
    assert_error_line(
        &out,
        1,
        &[&p(&export), &p(&d.join("events")), "--allow-non-empty"],
    );
    let nowhere = dir.path().join("no-such-dir").join("export.jsonl");
    let out = userstate(d, &["export", "-o", nowhere.to_str().unwrap()]);
    assert_error_line(&out, 1, &[&p(&nowhere)]);

    // Stores.
    let not_a_dir = dir.path().join("flat");
    std::fs::create_dir_all(&not_a_dir).unwrap();
    std::fs::write(not_a_dir.join("events"), "not a directory").unwrap();
    let out = userstate(&not_a_dir, &["rebuild"]);
    assert_error_line(&out, 1, &[&p(&not_a_dir.join("events"))]);
    let out = userstate(d, &["user", "get", "u1", "--store", "bogus"]);
    assert_error_line(&out, 1, &["\"bogus\""]);
    let out = userstate(
        d,
        &[
            "rebuild",
            "--store",
            "postgres://app:s3cret@127.0.0.1:1/none",
        ],
    );
    assert_error_line(&out, 9, &["postgres://app:***@127.0.0.1:1/none"]);
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    {
        let _serving = Serving::start(d);
        let out = userstate(d, &["user", "lock", "u1"]);
        assert_error_line(&out, 9, &[&p(&d.join("events")), "userstate.lock"]);
        // Reads are online operations (SPEC.md): they run beside the server.
        let out = userstate(d, &["export"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    // The server's own: an address in use, a tokens file that is not there.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = userstate(
        &dir.path().join("second"),
        &["serve", "--listen", &addr, "--store", "memory"],
    );
    assert_error_line(&out, 1, &[&addr]);
    // The OS's message ("Address already in use (os error 98)"), once.
    assert_eq!(
        stderr(&out).matches("(os error").count(),
        1,
        "{}",
        stderr(&out)
    );
    let tokens = dir.path().join("missing-tokens.toml");
    let out = userstate(
        &dir.path().join("third"),
        &[
            "serve",
            "--tokens",
            tokens.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert_error_line(&out, 1, &[&p(&tokens)]);
}

/// An unsupported `--format` is refused (exit 2, naming the formats there are); a supported
/// one is honoured.
#[test]
fn every_format_is_honoured_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    ok(d, &["user", "add", "bob", "--org", "acme", "--id", "u2"]);

    let csv = ok(d, &["user", "get", "u2", "--format", "csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert_eq!(
        rows[0],
        "userId,state,sequence,changeDate,resourceOwner,creationDate,position"
    );
    assert!(rows[1].starts_with("u2,USER_STATE_ACTIVE,1,"), "{csv}");
    let csv = ok(d, &["user", "lock", "u2", "--format", "csv"]);
    assert!(csv.lines().nth(1).unwrap().starts_with("2,"), "{csv}");
    let json: Value =
        serde_json::from_str(&ok(d, &["user", "get", "u2", "--format", "json"])).unwrap();
    assert_eq!(json["state"], "USER_STATE_LOCKED");

    let csv = ok(
        d,
        &[
            "audit",
            "state",
            "u2",
            "--at-sequence",
            "1",
            "--format",
            "csv",
        ],
    );
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "userId,state,sequence,changeDate,creationDate,resourceOwner"
    );
    assert!(rows[1].starts_with("u2,USER_STATE_ACTIVE,1,"), "{csv}");
    assert!(rows[1].ends_with(",acme"), "{csv}");

    for args in [
        &["user", "get", "u2", "--format", "xml"][..],
        &["verify", "--format", "csv"],
        &["rebuild", "--format", "table"],
        &["import", "x.jsonl", "--format", "csv"],
    ] {
        let out = userstate(d, args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(stderr(&out).contains("possible values"), "{}", stderr(&out));
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `verify`, `rebuild` and `import` with `--format json`: docs/CLI.md's schemas.
#[test]
fn reporting_commands_print_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    for i in 0..3 {
        let id = format!("j{i}");
        ok(d, &["user", "add", &id, "--org", "acme", "--id", &id]);
    }
    ok(d, &["user", "lock", "j1"]);

    let lines = json_lines(&ok(d, &["verify", "--format", "json"]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let summary = &lines[0];
    assert_eq!(summary["kind"], "summary");
    // 4 user events, 3 username reservations.
    assert_eq!(summary["events"], 7);
    assert_eq!(summary["users"], 3);
    assert_eq!(summary["streams"], 6);
    assert_eq!(
        (
            &summary["findings"],
            &summary["repairsPending"],
            &summary["orphans"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from(0))
    );
    assert_eq!(summary["clean"], true);

    let rebuilt = json_lines(&ok(d, &["rebuild", "--json"]));
    assert_eq!(rebuilt.len(), 1);
    let r = &rebuilt[0];
    assert_eq!(
        (&r["users"], &r["position"], &r["events"]),
        (&3.into(), &7.into(), &7.into())
    );
    assert_eq!(r["states"]["USER_STATE_ACTIVE"], 2);
    assert_eq!(r["states"]["USER_STATE_LOCKED"], 1);
    assert_eq!(r["states"]["USER_STATE_INACTIVE"], 0);
    assert!(
        r["seconds"].is_f64() && r["eventsPerSecond"].is_f64(),
        "{r}"
    );

    let export = dir.path().join("export.jsonl");
    ok(d, &["export", "-o", export.to_str().unwrap()]);
    let copy = dir.path().join("copy");
    let imported = json_lines(&ok(
        &copy,
        &["import", export.to_str().unwrap(), "--format", "json"],
    ));
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0]["imported"], 7);
    assert_eq!(imported[0]["file"], export.to_str().unwrap());

    // A damaged store: one finding object per finding, then the summary; exit 1.
    let segment = std::fs::read_dir(d.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[end / 2] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let out = userstate(d, &["verify", "--format", "json"]);
    assert_eq!(code(&out), 1);
    let lines = json_lines(&stdout(&out));
    let (last, findings) = lines.split_last().unwrap();
    assert!(!findings.is_empty());
    for f in findings {
        assert_eq!(f["kind"], "finding", "{f}");
        assert!(f["problem"].as_str().is_some_and(|p| !p.is_empty()), "{f}");
        for key in ["stream", "sequence", "position"] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
    }
    assert_eq!(last["kind"], "summary");
    assert_eq!(last["clean"], false);
    assert_eq!(last["findings"], findings.len());
}
