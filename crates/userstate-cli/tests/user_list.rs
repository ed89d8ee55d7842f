//! `userstate user list` through the built binary on a temporary data directory: each filter,
//! the order and the page, in the table, JSON and CSV forms, and a refused page size.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn userstate(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_userstate"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("USERSTATE_STORE")
        .env_remove("USERSTATE_INSTANCE")
        .output()
        .expect("run the userstate binary")
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = userstate(data, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `user list` with `args`, in JSON: the total and the user ids of the page, in order.
fn list(data: &Path, args: &[&str]) -> (u64, Vec<String>) {
    let mut all = vec!["user", "list", "--format", "json"];
    all.extend_from_slice(args);
    let answer: Value = serde_json::from_str(&ok(data, &all)).expect("one JSON answer");
    let total = answer["details"]["totalResult"]
        .as_str()
        .expect("totalResult is a string")
        .parse()
        .unwrap();
    let ids = answer["result"]
        .as_array()
        .expect("result is a list")
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect();
    (total, ids)
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|&s| s.to_owned()).collect()
}

#[test]
fn user_list_filters_sorts_pages_and_prints_table_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Added in this order (so creation order is u1 … u6).
    for (name, org, id) in [
        ("carol", "acme", "u1"),
        ("Alice", "acme", "u2"),
        ("bob", "globex", "u3"),
        ("dave", "acme", "u4"),
        ("erin", "globex", "u5"),
        ("alina", "acme", "u6"),
    ] {
        ok(
            d,
            &["user", "add", name, "--org", org, "--id", id, "--json"],
        );
    }
    ok(d, &["user", "lock", "u3", "--json"]);
    ok(d, &["user", "lock", "u4", "--json"]);
    ok(d, &["user", "deactivate", "u5", "--json"]);
    ok(d, &["user", "remove", "u6", "--json"]);
    // Another instance's user is never listed in this one.
    ok(
        d,
        &[
            "user",
            "add",
            "zed",
            "--org",
            "acme",
            "--id",
            "u7",
            "--instance",
            "other",
            "--json",
        ],
    );

    // No filter: every live user of the instance, by creation date (removed u6 left out).
    assert_eq!(list(d, &[]), (5, ids(&["u1", "u2", "u3", "u4", "u5"])));
    assert_eq!(
        list(d, &["--desc"]),
        (5, ids(&["u5", "u4", "u3", "u2", "u1"]))
    );
    assert_eq!(list(d, &["--instance", "other"]), (1, ids(&["u7"])));

    // Each filter, and two together.
    assert_eq!(list(d, &["--state", "locked"]), (2, ids(&["u3", "u4"])));
    assert_eq!(list(d, &["--state", "inactive"]), (1, ids(&["u5"])));
    assert_eq!(list(d, &["--org", "globex"]), (2, ids(&["u3", "u5"])));
    assert_eq!(
        list(d, &["--org", "acme", "--state", "locked"]),
        (1, ids(&["u4"]))
    );
    assert_eq!(list(d, &["--org", "nope"]), (0, ids(&[])));
    assert_eq!(
        list(d, &["--id", "u2", "--id", "u5", "--id", "u6"]),
        (2, ids(&["u2", "u5"]))
    );

    // User-name matches: prefix by default, case-sensitive unless --ignore-case.
    assert_eq!(list(d, &["--username", "a"]), (0, ids(&[])));
    assert_eq!(
        list(d, &["--username", "a", "--ignore-case"]),
        (1, ids(&["u2"]))
    );
    assert_eq!(
        list(
            d,
            &[
                "--username",
                "O",
                "--match",
                "contains",
                "--ignore-case",
                "--sort",
                "user-name"
            ]
        ),
        (2, ids(&["u3", "u1"]))
    );
    assert_eq!(
        list(d, &["--username", "bob", "--match", "equals"]),
        (1, ids(&["u3"]))
    );
    assert_eq!(
        list(
            d,
            &["--username", "N", "--match", "ends-with", "--ignore-case"]
        ),
        (1, ids(&["u5"]))
    );

    // Sort columns and pages: user name ignores case; state by its number, then creation.
    assert_eq!(
        list(d, &["--sort", "user-name"]),
        (5, ids(&["u2", "u3", "u1", "u4", "u5"]))
    );
    assert_eq!(
        list(d, &["--sort", "state"]),
        (5, ids(&["u1", "u2", "u5", "u3", "u4"]))
    );
    assert_eq!(
        list(
            d,
            &[
                "--sort",
                "user-name",
                "--desc",
                "--offset",
                "1",
                "--limit",
                "2"
            ]
        ),
        (5, ids(&["u4", "u1"]))
    );
    assert_eq!(list(d, &["--offset", "5"]), (5, ids(&[])));

    // The JSON form is the answer of `POST /v2/users`.
    let answer: Value = serde_json::from_str(&ok(
        d,
        &[
            "user",
            "list",
            "--json",
            "--sort",
            "user-name",
            "--limit",
            "1",
        ],
    ))
    .unwrap();
    assert_eq!(answer["sortingColumn"], "USER_FIELD_NAME_USER_NAME");
    assert_eq!(answer["details"]["totalResult"], "5");
    let user = &answer["result"][0];
    assert_eq!(user["userId"], "u2");
    assert_eq!(user["username"], "Alice");
    assert_eq!(user["state"], "USER_STATE_ACTIVE");
    assert_eq!(user["details"]["resourceOwner"], "acme");

    // CSV: a header and one row per user of the page.
    let csv = ok(d, &["user", "list", "--format", "csv", "--state", "locked"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "userId,username,state,resourceOwner,creationDate,sequence"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].starts_with("u3,bob,USER_STATE_LOCKED,globex,"),
        "{csv}"
    );
    assert!(
        lines[2].starts_with("u4,dave,USER_STATE_LOCKED,acme,"),
        "{csv}"
    );
    assert!(
        lines[1].ends_with(",2"),
        "sequence 2 (added, locked): {csv}"
    );

    // Table: a header, one line per user, then how many of how many.
    let table = ok(d, &["user", "list", "--org", "acme", "--limit", "2"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for column in [
        "userId",
        "username",
        "state",
        "resourceOwner",
        "creationDate",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with("u1 ") && lines[1].contains("carol"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("u2 ") && lines[2].contains("USER_STATE_ACTIVE"),
        "{table}"
    );
    assert_eq!(lines[3], "2 of 3 users");

    // A page over the maximum is refused as an invalid argument (exit code 6).
    let out = userstate(d, &["user", "list", "--limit", "1001"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"));
}
