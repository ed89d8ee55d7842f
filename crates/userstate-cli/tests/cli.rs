//! The `userstate` binary on a temporary data directory: user commands in both formats, exit
//! codes, audit at many points of a long history, verify on clean and damaged stores, and
//! export -> import into a fresh store.

mod bin;

use bin::userstate;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn ok_json(data: &Path, args: &[&str]) -> Value {
    let out = userstate(data, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON answer")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[test]
fn user_commands_answer_details_and_exit_codes_tell_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let added = ok_json(
        d,
        &[
            "user", "add", "alice", "--org", "acme", "--id", "u1", "--json",
        ],
    );
    assert_eq!(added["userId"], "u1");
    assert_eq!(added["details"]["sequence"], "1");
    assert_eq!(added["details"]["resourceOwner"], "acme");
    let change = added["details"]["changeDate"].as_str().unwrap();
    assert!(change.ends_with('Z') && change.len() == 24, "{change}");

    let locked = ok_json(d, &["user", "lock", "u1", "--json"]);
    assert_eq!(locked["details"]["sequence"], "2");

    // The table form names the same fields.
    let out = userstate(d, &["user", "unlock", "u1"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("sequence       3"), "{table}");

    let got = ok_json(d, &["user", "get", "u1", "--json"]);
    assert_eq!(got["state"], "USER_STATE_ACTIVE");
    assert_eq!(got["details"]["sequence"], "3");
    assert_eq!(
        got["details"]["creationDate"],
        added["details"]["creationDate"]
    );

    for (args, expected, id) in [
        (&["user", "unlock", "u1"][..], 3, "COMMAND-olb9vb0oca"),
        (&["user", "lock", "nobody"][..], 4, "COMMAND-450yxuqrh1"),
        (
            &["user", "add", "ALICE", "--org", "acme"][..],
            5,
            "COMMAND-7yiox1isql",
        ),
        (&["user", "lock", "bad id"][..], 6, ""),
    ] {
        let out = userstate(d, args);
        assert_eq!(code(&out), expected, "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(id),
            "{args:?}"
        );
    }
    ok_json(d, &["user", "remove", "u1", "--json"]);
    assert_eq!(code(&userstate(d, &["user", "get", "u1"])), 4);
}

#[test]
fn audit_shows_history_in_three_formats_and_state_at_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok_json(
        d,
        &["user", "add", "bob", "--org", "o1", "--id", "u2", "--json"],
    );
    // A long history: 40 lock/unlock pairs, then deactivate.
    for _ in 0..40 {
        ok_json(d, &["user", "lock", "u2", "--json"]);
        ok_json(d, &["user", "unlock", "u2", "--json"]);
    }
    ok_json(d, &["user", "deactivate", "u2", "--json"]);

    let out = userstate(d, &["audit", "history", "u2", "--json"]);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 82);
    assert_eq!(lines[0]["type"], "user.human.added");
    assert_eq!(lines[81]["type"], "user.deactivated");
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, e)| e["sequence"] == i as u64 + 1));
    assert!(lines.iter().all(|e| e["metadata"]["creator"] == "cli"));

    let csv = String::from_utf8(userstate(d, &["audit", "history", "u2", "--csv"]).stdout).unwrap();
    assert_eq!(csv.lines().count(), 83, "header + 82 rows");
    assert!(csv.starts_with("sequence,position,createdAt,type,creator,payload"));
    let table = String::from_utf8(userstate(d, &["audit", "history", "u2"]).stdout).unwrap();
    assert!(table.lines().nth(2).unwrap().contains("user.locked"));

    for (seq, state) in [
        (1, "USER_STATE_ACTIVE"),
        (2, "USER_STATE_LOCKED"),
        (3, "USER_STATE_ACTIVE"),
        (40, "USER_STATE_LOCKED"),
        (41, "USER_STATE_ACTIVE"),
        (82, "USER_STATE_INACTIVE"),
        (1000, "USER_STATE_INACTIVE"),
    ] {
        let s = seq.to_string();
        let at = ok_json(d, &["audit", "state", "u2", "--at-sequence", &s, "--json"]);
        assert_eq!(at["state"], state, "as of sequence {seq}");
        assert_eq!(at["details"]["sequence"], seq.min(82).to_string());
    }
    // By time: the 41st event's time gives the state right after it.
    let t = lines[40]["createdAt"].as_str().unwrap();
    let at = ok_json(d, &["audit", "state", "u2", "--at-time", t, "--json"]);
    assert!(
        at["details"]["sequence"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 41
    );
    let before = ok_json(
        d,
        &[
            "audit",
            "state",
            "u2",
            "--at-time",
            "2001-01-01T00:00:00Z",
            "--json",
        ],
    );
    assert_eq!(before["state"], Value::Null);
}

#[test]
fn verify_passes_a_clean_store_and_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..20 {
        let id = format!("v{i}");
        ok_json(
            d,
            &[
                "user",
                "add",
                &format!("user{i}"),
                "--org",
                "o",
                "--id",
                &id,
                "--json",
            ],
        );
        ok_json(d, &["user", "lock", &id, "--json"]);
    }
    let out = userstate(d, &["verify"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 finding"));

    // Flip one byte in the middle of the log.
    let segment = std::fs::read_dir(d.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    // The segment ends in zeros written ahead of the log; flip a byte in the records.
    let records_end = bytes.iter().rposition(|&b| b != 0).expect("records");
    let middle = records_end / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let out = userstate(d, &["verify"]);
    assert_eq!(code(&out), 1);
    let report = String::from_utf8_lossy(&out.stdout);
    let name = segment.file_name().unwrap().to_string_lossy();
    assert!(
        report.contains("FINDING") && report.contains(&*name),
        "{report}"
    );
    assert!(report.contains("offset"), "{report}");
}

#[test]
fn export_then_import_gives_identical_histories_and_read_model() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for i in 0..5 {
        let id = format!("e{i}");
        ok_json(
            &a,
            &[
                "user",
                "add",
                &format!("n{i}"),
                "--org",
                "o",
                "--id",
                &id,
                "--json",
            ],
        );
        ok_json(&a, &["user", "lock", &id, "--json"]);
        if i % 2 == 0 {
            ok_json(&a, &["user", "unlock", &id, "--json"]);
        }
    }
    let file = dir.path().join("export.jsonl");
    let out = userstate(&a, &["export", "-o", file.to_str().unwrap()]);
    assert!(out.status.success());
    let out = userstate(&b, &["import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second import into the now non-empty store is refused.
    assert_eq!(code(&userstate(&b, &["import", file.to_str().unwrap()])), 1);
    for i in 0..5 {
        let id = format!("e{i}");
        let (ha, hb) = (
            userstate(&a, &["audit", "history", &id, "--json"]).stdout,
            userstate(&b, &["audit", "history", &id, "--json"]).stdout,
        );
        let strip = |bytes: Vec<u8>| -> Vec<(Value, Value, Value, Value)> {
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    (
                        v["eventId"].clone(),
                        v["sequence"].clone(),
                        v["createdAt"].clone(),
                        v["type"].clone(),
                    )
                })
                .collect()
        };
        assert_eq!(strip(ha), strip(hb), "history of {id}");
    }
    let summary = |d: &Path| String::from_utf8(userstate(d, &["rebuild"]).stdout).unwrap();
    let (ra, rb) = (summary(&a), summary(&b));
    let states = |s: &str| s.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(states(&ra), states(&rb));
    assert!(ra.contains("USER_STATE_LOCKED    2"), "{ra}");
}

/// Every file of `dir`: name -> (bytes, length, mode).
fn files(dir: &Path) -> std::collections::BTreeMap<String, (Vec<u8>, u64, u32)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                (
                    std::fs::read(&path).unwrap(),
                    meta.len(),
                    meta.permissions().mode(),
                ),
            )
        })
        .collect()
}

fn add_users(d: &Path, n: usize) {
    for i in 0..n {
        let id = format!("t{i}");
        ok_json(
            d,
            &[
                "user",
                "add",
                &format!("tail{i}"),
                "--org",
                "o",
                "--id",
                &id,
                "--json",
            ],
        );
    }
}

/// The newest segment of the file store in data directory `d`.
fn newest_segment(d: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(d.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment file")
}

/// `verify` after a crash changes no evidence: it opens the store read-only, so a torn tail is
/// reported and left in place (bytes, sizes, modes), and no lock file is created.
#[test]
fn verify_reports_a_torn_tail_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_users(d, 5);
    let segment = newest_segment(d);
    let bytes = std::fs::read(&segment).unwrap();
    let records_end = bytes.iter().rposition(|&b| b != 0).expect("records") as u64 + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(records_end - 7)
        .unwrap();
    std::fs::remove_file(d.join("events").join("userstate.lock")).unwrap();
    let before = files(&d.join("events"));

    let out = userstate(d, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{report}");
    assert!(report.contains("torn tail"), "{report}");
    // The torn append was the last add's user event: its username reservation, written by
    // the append before, is reported as an orphan (reclaimed by the next add of the name);
    // the stream is named by the keyed hash of the name, never the name (ADR 0021).
    assert!(
        report.contains("ORPHAN: stream username:default:h-"),
        "{report}"
    );
    assert!(report.contains("held by user UserId(\"t4\")"), "{report}");
    assert!(!report.contains("tail4"), "{report}");
    let name = segment.file_name().unwrap().to_string_lossy();
    assert!(report.contains(&*name), "{report}");
    assert_eq!(files(&d.join("events")), before, "verify changed the store");
}

/// Loss at the tail is a finding, not a clean report: a changed byte in the last record, and
/// the newest segment deleted.
#[test]
fn verify_finds_a_damaged_last_record_and_a_deleted_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    add_users(d, 5);
    let segment = newest_segment(d);
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.iter().rposition(|&b| b != 0).expect("records");
    bytes[last - 20] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let out = userstate(d, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 1, "{report}");
    assert!(
        report.contains("FINDING") && report.contains("offset"),
        "{report}"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "left as found");

    std::fs::remove_file(&segment).unwrap();
    let out = userstate(d, &["verify"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 1, "{report}");
    assert!(report.contains("missing segment"), "{report}");
}

/// `import -` reads standard input; into an empty store the export comes back byte for byte
/// (ids, sequences, `createdAt`, and the positions, which the store assigns anew in file
/// order). A bad line is named with the input and its number, and a refused import creates
/// nothing: no data directory.
#[test]
fn import_reads_stdin_keeps_the_order_and_creates_nothing_when_refused() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // Interleaved streams: users added, then locked in another order.
    for i in 0..6 {
        ok_json(
            &a,
            &[
                "user",
                "add",
                &format!("m{i}"),
                "--org",
                "o",
                "--id",
                &format!("m{i}"),
                "--json",
            ],
        );
    }
    for i in [4, 1, 5, 0] {
        ok_json(&a, &["user", "lock", &format!("m{i}"), "--json"]);
    }
    let export = userstate(&a, &["export"]);
    assert!(export.status.success());
    let import = |data: &Path, input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_userstate"))
            .args(["import", "-", "--format", "json", "--data"])
            .arg(data)
            .env_remove("USERSTATE_STORE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = import(&b, &export.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["file"], "-");
    assert_eq!(
        summary["imported"].as_u64().unwrap() as usize,
        export.stdout.iter().filter(|&&c| c == b'\n').count()
    );
    assert_eq!(
        userstate(&b, &["export"]).stdout,
        export.stdout,
        "the import is the export"
    );

    let mut bad = export.stdout.clone();
    bad.extend_from_slice(b"{\"not\":\"an event\"}\n");
    let lines = bad.iter().filter(|&&c| c == b'\n').count();
    let fresh = dir.path().join("fresh");
    let out = import(&fresh, &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("standard input") && err.contains(&format!("line {lines}")),
        "{err}"
    );
    assert!(
        !fresh.exists(),
        "a refused import created {}",
        fresh.display()
    );
}
