//! `userstate checkpoint keygen|sign` and `verify --checkpoint --pubkey` on the file store: a
//! signed checkpoint verifies; a payload byte changed before it (framing fixed up) fails both
//! the chain and the checkpoint, by position; a checkpoint under another key is refused.

mod bin;

use bin::userstate;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use userstate::store::file_record::{decode, encode, Decoded, Marks};

fn ok(data: &Path, args: &[&str]) -> Output {
    let out = userstate(data, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `checkpoint keygen`, which takes no store options.
fn keygen(key: &Path, pubkey: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args([
            "checkpoint",
            "keygen",
            "--key",
            s(key),
            "--pubkey",
            s(pubkey),
        ])
        .output()
        .expect("run the userstate binary")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_signed_checkpoint_verifies_and_a_changed_byte_before_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = &dir.path().join("data");
    for i in 0..3 {
        let id = format!("c{i}");
        ok(
            d,
            &[
                "user",
                "add",
                &format!("carol{i}"),
                "--org",
                "o",
                "--id",
                &id,
            ],
        );
        ok(d, &["user", "lock", &id]);
    }
    let key = dir.path().join("signing.key");
    let pubkey = dir.path().join("signing.pub");
    assert!(keygen(&key, &pubkey).status.success());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Never overwritten.
    assert!(!keygen(&key, &pubkey).status.success());

    let signed = ok(d, &["checkpoint", "sign", "--key", s(&key)]);
    let checkpoint = dir.path().join("checkpoint.json");
    std::fs::write(&checkpoint, &signed.stdout).unwrap();
    let cp: serde_json::Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(cp["position"], 9, "3 users: add (2 events) and lock each");

    let args = [
        "verify",
        "--checkpoint",
        s(&checkpoint),
        "--pubkey",
        s(&pubkey),
    ];
    let out = ok(d, &args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("checkpoint at position 9: proven"));
    // Later appends leave the checkpoint proven.
    ok(d, &["user", "unlock", "c0"]);
    let out = ok(d, &[&args[..], &["--format", "json"]].concat());
    let summary: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["checkpointProven"], true, "{summary}");
    assert_eq!(summary["headPosition"], 10);

    // Another key's public key: the checkpoint is refused before any scan.
    let other_key = dir.path().join("other.key");
    let other_pub = dir.path().join("other.pub");
    assert!(keygen(&other_key, &other_pub).status.success());
    let out = userstate(
        d,
        &[
            "verify",
            "--checkpoint",
            s(&checkpoint),
            "--pubkey",
            s(&other_pub),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not match"));

    // One byte of the fifth event's payload (carol1's user.human.added: its organisation) changed, its framing
    // (CRCs) fixed up.
    let segment = std::fs::read_dir(d.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let mut at = 16;
    let mut out_bytes = bytes[..16].to_vec();
    while let Decoded::Record { record, len } = decode(&bytes[at..]) {
        let mut event = record.to_event().unwrap();
        if event.position == 5 {
            // Personal data is sealed (ADR 0021): the organisation is in clear.
            let text = serde_json::to_string(&event.payload).unwrap();
            assert!(text.contains(r#""resourceOwner":"o""#), "{text}");
            event.payload = serde_json::from_str(
                &text.replace(r#""resourceOwner":"o""#, r#""resourceOwner":"p""#),
            )
            .unwrap();
        }
        let marks = Marks {
            ends_append: record.ends_append,
            starts_batch: record.starts_batch,
        };
        encode(&event, marks, &mut out_bytes).unwrap();
        at += len;
    }
    out_bytes.resize(bytes.len(), 0);
    std::fs::write(&segment, out_bytes).unwrap();
    let out = userstate(d, &args);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(position 5): hash chain broken"), "{text}");
    assert!(
        text.contains("checkpoint at position 9: NOT proven"),
        "{text}"
    );
    // And a broken chain is not signed.
    let out = userstate(d, &["checkpoint", "sign", "--key", s(&key)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to sign"));
}
