//! Moving a store between backends and upgrading stores written before issue 28 (ADR 0020,
//! ADR 0021, docs/OPERATIONS.md "Upgrading"), on the real binary:
//!
//! - file → PostgreSQL → file with `export --keys` / `import --keys`: every store verifies, the
//!   exported lines (hashes included) are the same from each, nothing personal is stored in
//!   clear in any file or row, the users read as before, and an erasure done after the move
//!   forgets in the target;
//! - a data directory and an export written by the release before the chain and the
//!   encryption (`bbc41b0`, fixtures in `tests/fixtures/pre28`, made by `make.sh` there): the
//!   new binary exports the old log read-only, and the import seals it, names reservations by
//!   the keyed hash and chains it; the users, their histories and usernames survive, `verify`
//!   passes, and erasure forgets;
//! - a PostgreSQL store holding rows in clear is not served, and says how to upgrade.

mod bin;
mod cluster;

use std::path::{Path, PathBuf};

use bin::userstate;
use cluster::pg::Database;
use cluster::raw::{contains_any, dump_schema, found_in_files};
use cluster::{write_tokens, Client, Node};
use reqwest::Method;
use serde_json::{json, Value};

/// The personal strings of the user the tests erase (username also in canonical form).
const ERASED: [&str; 5] = [
    "Zelda.Quixote-7F3",
    "zelda.quixote-7f3",
    "Gwendolyn-Q7x",
    "Fitzwilliam-K2p",
    "gwen.q7x@example.org",
];
/// The personal strings of the user the tests keep.
const KEPT: [&str; 5] = [
    "Bartholomew.R5t",
    "bartholomew.r5t",
    "Ottoline-M4z",
    "Pemberton-W8c",
    "otto.m4z@example.org",
];

fn all_personal() -> Vec<&'static str> {
    ERASED.iter().chain(KEPT.iter()).copied().collect()
}

/// Runs `userstate ARGS --data DATA`, asserting success; returns standard output.
fn ok(data: &Path, args: &[&str]) -> String {
    let out = userstate(data, args);
    assert!(
        out.status.success(),
        "userstate {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `export` of `store` (with `--keys`) to `dir/name.jsonl` and `dir/name.keys`.
fn export(data: &Path, store: &str, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (file, keys) = (
        dir.join(format!("{name}.jsonl")),
        dir.join(format!("{name}.keys")),
    );
    ok(
        data,
        &[
            "export",
            "--store",
            store,
            "-o",
            file.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
        ],
    );
    (file, keys)
}

/// `import` of `file` (with the key file `keys`, if any) into `store`.
fn import(data: &Path, store: &str, file: &Path, keys: Option<&Path>) {
    let mut args = vec!["import", "--store", store, file.to_str().unwrap()];
    if let Some(keys) = keys {
        args.extend(["--keys", keys.to_str().unwrap()]);
    }
    ok(data, &args);
}

/// The lines of an export file, parsed.
fn lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `verify --store STORE` passes, and its summary's head hash is the last line's of `file`.
fn verifies(data: &Path, store: &str, file: &Path) {
    let out = ok(data, &["verify", "--store", store, "--format", "json"]);
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["clean"], true, "{out}");
    let last = lines(file).pop().unwrap();
    assert_eq!(summary["headHash"], last["hash"], "{out}");
}

/// `serve` on `store`, once its read model caught up with the store (`/readyz`).
async fn serve(store: &str, tokens: &Path, data: &Path, client: &Client) -> Node {
    let node = Node::start(store, tokens, data, &[]);
    client
        .wait_ready(&node.base, std::time::Duration::from_secs(30))
        .await;
    node
}

/// The user `id` as `GET /v2/users/{id}` answers it.
async fn user(client: &Client, node: &Node, id: &str) -> Value {
    let answer = client.get(&node.base, id, None).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["user"].clone()
}

/// Adds `id` with the personal strings `p` (username, -, given, family, email).
async fn add(client: &Client, node: &Node, id: &str, p: [&str; 5]) -> u16 {
    let body = json!({
        "userId": id, "username": p[0], "organization": {"orgId": "acme"},
        "profile": {"givenName": p[2], "familyName": p[3]}, "email": {"email": p[4]},
    });
    client
        .json(&node.base, Method::POST, "/v2/users/human", &body)
        .await
        .unwrap()
        .status
}

/// Removes and erases `id`; then its history keeps its lifecycle with nothing personal.
async fn remove_and_erase(client: &Client, node: &Node, id: &str) {
    let removed = client
        .json(
            &node.base,
            Method::DELETE,
            &format!("/v2/users/{id}"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(removed.status, 200, "{removed:?}");
    let erased = client.act(&node.base, id, "erase").await.unwrap();
    assert_eq!(erased.status, 200, "{erased:?}");
    let history = client
        .get_path(&node.base, &format!("/v2/users/{id}/history"))
        .await
        .unwrap();
    assert_eq!(history.status, 200, "{history:?}");
    let text = history.body.to_string();
    assert_eq!(contains_any(&text, &ERASED), Vec::<String>::new());
    assert_eq!(history.body["events"][0]["type"], "user.human.added");
    assert_eq!(
        history.body["events"][0]["payload"]["erased"], true,
        "{text}"
    );
    assert!(text.contains("user.removed") && text.contains("user.erased"));
}

/// Checks the kept user reads in clear (locked) and its name stays taken.
async fn kept_user_reads(client: &Client, node: &Node) {
    let kept = user(client, node, "u2").await;
    assert_eq!(kept["username"], KEPT[0]);
    assert_eq!(kept["human"]["profile"]["givenName"], KEPT[2]);
    assert_eq!(kept["human"]["email"]["email"], KEPT[4]);
    assert_eq!(kept["state"], "USER_STATE_LOCKED");
    assert_eq!(
        add(client, node, "u9", KEPT).await,
        409,
        "a taken name stays taken"
    );
}

/// file → PostgreSQL → file: the chain, the ciphertext and the keys move; erasure after the
/// move forgets in the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_file_to_postgres_to_file_with_its_chain_ciphertext_and_keys() {
    let Some(db) = Database::create("migrate").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tmp.path());
    let client = Client::new();
    let (first, middle, last) = (
        tmp.path().join("first"),
        tmp.path().join("middle"),
        tmp.path().join("last"),
    );

    // On the file store: two users, one locked.
    let node = serve("file", &tokens, &first, &client).await;
    assert_eq!(add(&client, &node, "u1", ERASED).await, 201);
    assert_eq!(add(&client, &node, "u2", KEPT).await, 201);
    assert_eq!(
        client.act(&node.base, "u2", "lock").await.unwrap().status,
        200
    );
    drop(node);
    let (from_file, file_keys) = export(&first, "file", tmp.path(), "from-file");
    verifies(&first, "file", &from_file);
    assert_eq!(found_in_files(&first, &all_personal()), vec![]);

    // Into PostgreSQL: the same lines (hashes included: same events, same positions).
    import(&middle, &db.url, &from_file, Some(&file_keys));
    let (from_pg, _) = export(&middle, &db.url, tmp.path(), "from-pg");
    assert_eq!(lines(&from_pg), lines(&from_file));
    verifies(&middle, &db.url, &from_pg);
    let rows = dump_schema(&db.url, "userstate").await;
    assert_eq!(contains_any(&rows, &all_personal()), Vec::<String>::new());

    // Served from PostgreSQL; the erasure done there forgets there.
    let node = serve(&db.url, &tokens, &middle, &client).await;
    assert_eq!(user(&client, &node, "u1").await["username"], ERASED[0]);
    kept_user_reads(&client, &node).await;
    remove_and_erase(&client, &node, "u1").await;
    drop(node);
    let rows = dump_schema(&db.url, "userstate").await;
    assert!(
        rows.contains("(default:u1,)"),
        "the erased user's key row is emptied:\n{rows}"
    );
    let (after_erase, erased_keys) = export(&middle, &db.url, tmp.path(), "after-erase");
    verifies(&middle, &db.url, &after_erase);

    // Back to a file store, with the erasure.
    import(&last, "file", &after_erase, Some(&erased_keys));
    let (back, _) = export(&last, "file", tmp.path(), "back");
    assert_eq!(lines(&back), lines(&after_erase));
    verifies(&last, "file", &back);
    let node = serve("file", &tokens, &last, &client).await;
    kept_user_reads(&client, &node).await;
    let history = client
        .get_path(&node.base, "/v2/users/u1/history")
        .await
        .unwrap();
    assert_eq!(history.body["events"][0]["payload"]["erased"], true);
    drop(node);
    assert_eq!(found_in_files(&last, &all_personal()), vec![]);
    let keys = std::fs::read_to_string(last.join("keys")).unwrap();
    assert!(!keys.contains("default:u1 ") && keys.contains("default:u2 "));
}

/// The fixtures written by the release before issue 28, copied to `to`.
fn pre28_fixture(to: &Path) -> (PathBuf, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pre28");
    let data = to.join("old");
    copy_dir(&fixtures.join("data"), &data);
    let export = to.join("pre28.jsonl");
    std::fs::copy(fixtures.join("export.jsonl"), &export).unwrap();
    (data, export)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// An upgraded store (imported from a pre-28 export) holds what the old one did, sealed.
async fn upgraded_store_reads_and_erases(data: &Path, tokens: &Path, client: &Client) {
    assert_eq!(found_in_files(data, &all_personal()), vec![]);
    let out = ok(data, &["verify", "--format", "json"]);
    assert!(out.contains("\"clean\":true"), "{out}");
    let node = serve("file", tokens, data, client).await;
    let zelda = user(client, &node, "u1").await;
    assert_eq!(zelda["username"], ERASED[0]);
    assert_eq!(zelda["human"]["profile"]["familyName"], ERASED[3]);
    kept_user_reads(client, &node).await;
    // u3 was removed before the upgrade: its name was released, and is free.
    let history = client
        .get_path(&node.base, "/v2/users/u3/history")
        .await
        .unwrap();
    let types: Vec<&str> = history.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user.human.added", "user.removed"]);
    let third = ["Cornelius.J9d", "cornelius.j9d", "A", "B", "c@example.org"];
    assert_eq!(add(client, &node, "u4", third).await, 201);
    remove_and_erase(client, &node, "u1").await;
    drop(node);
    assert_eq!(found_in_files(data, &all_personal()), vec![]);
    let out = ok(data, &["verify"]);
    assert!(out.contains("0 finding(s)"), "{out}");
}

/// A data directory of record format 1, and an export without hashes and with personal data
/// in clear, both written by the release before issue 28: the new binary upgrades both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_written_before_issue_28_are_upgraded_by_export_and_import() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tmp.path());
    let client = Client::new();
    let (old, old_export) = pre28_fixture(tmp.path());

    // The old log is not served (nor written), and verify says it holds no chain.
    let served = userstate(
        &old,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            tokens.to_str().unwrap(),
        ],
    );
    assert!(!served.status.success());
    let said = String::from_utf8_lossy(&served.stderr);
    assert!(
        said.contains("format 1") && said.contains("Upgrading"),
        "{said}"
    );
    let verified = userstate(&old, &["verify"]);
    assert_eq!(verified.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("format 1"));

    // The new binary reads it for export: the lines in clear, chained as read.
    let exported = tmp.path().join("from-old.jsonl");
    ok(&old, &["export", "-o", exported.to_str().unwrap()]);
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(text.contains(ERASED[0]) && text.contains("username:default:bartholomew.r5t"));
    let events = lines(&exported);
    assert!(events
        .iter()
        .all(|e| e["hash"].as_str().is_some_and(|h| h != "0".repeat(64))));
    // Nothing in the old directory changed.
    assert_eq!(
        found_in_files(&old, &[ERASED[0]]).len(),
        1,
        "the old log stays as it was"
    );

    // Imported, it is sealed, its reservations hashed, and chained anew.
    let upgraded = tmp.path().join("upgraded");
    import(&upgraded, "file", &exported, None);
    let sealed = export(&upgraded, "file", tmp.path(), "upgraded").0;
    let sealed_lines = lines(&sealed);
    assert_eq!(sealed_lines.len(), events.len());
    for (old, new) in events.iter().zip(&sealed_lines) {
        for field in ["eventId", "type", "sequence", "position", "createdAt"] {
            assert_eq!(old[field], new[field], "{field}");
        }
    }
    upgraded_store_reads_and_erases(&upgraded, &tokens, &client).await;

    // The export the old release wrote (no hashes, personal data in clear) upgrades the same.
    assert!(lines(&old_export).iter().all(|e| e.get("hash").is_none()));
    let from_export = tmp.path().join("from-export");
    import(&from_export, "file", &old_export, None);
    upgraded_store_reads_and_erases(&from_export, &tokens, &client).await;
}

/// A PostgreSQL store holding rows written in clear before crypto-shredding (migration 0006
/// records where they end) is not served; export reads it, and the import into a new database
/// seals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_with_rows_in_clear_is_refused_until_reimported() {
    let (Some(old_db), Some(new_db)) = (
        Database::create("clear_old").await,
        Database::create("clear_new").await,
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tokens = write_tokens(tmp.path());
    let client = Client::new();
    let (_, old_export) = pre28_fixture(tmp.path());
    let data = tmp.path().join("data");
    import(&data, &old_db.url, &old_export, None);
    // Back to the database the release before issue 28 wrote: rows in clear, reservation
    // streams named by the name, the schema of migration 3. A build with migrations 4 to 6
    // chains those rows, adds the key table and records where the rows in clear end.
    let (pg, connection) = tokio_postgres::connect(&old_db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for event in lines(&old_export) {
        pg.execute(
            "UPDATE userstate.events SET payload = $1::text::jsonb, stream = $2
             WHERE event_id = $3::text::uuid",
            &[
                &event["payload"].to_string(),
                &event["stream"].as_str().unwrap(),
                &event["eventId"].as_str().unwrap(),
            ],
        )
        .await
        .unwrap();
    }
    pg.batch_execute(&format!(
        "SET search_path TO userstate;
         DROP FUNCTION append_batch(text[], text[], bigint[], int[], int[], int[], text[],
             int[], jsonb[], jsonb[], uuid[], timestamptz[], bytea[], text);
         DROP FUNCTION chain_link(bytea, bigint, bigint, timestamptz, uuid, int, bytea);
         ALTER TABLE events DROP COLUMN hash;
         ALTER TABLE position_counter DROP COLUMN head_hash, DROP COLUMN clear_until;
         DROP TABLE user_keys;
         DELETE FROM schema_migrations WHERE version >= 4;
         {}",
        include_str!("../../userstate-postgres/src/sql/migrations/0003_append_batch.sql")
    ))
    .await
    .unwrap();
    // Verify reads it as stored: the chain the migration computed holds.
    let out = ok(&data, &["verify", "--store", &old_db.url]);
    assert!(out.contains("0 finding(s)"), "{out}");

    let refused = userstate(&data, &["user", "get", "u2", "--store", &old_db.url]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("in clear") && said.contains("Upgrading"),
        "{said}"
    );

    let (exported, _) = export(&data, &old_db.url, tmp.path(), "old-pg");
    let new_data = tmp.path().join("new");
    import(&new_data, &new_db.url, &exported, None);
    let rows = dump_schema(&new_db.url, "userstate").await;
    assert_eq!(contains_any(&rows, &all_personal()), Vec::<String>::new());
    let node = serve(&new_db.url, &tokens, &new_data, &client).await;
    kept_user_reads(&client, &node).await;
    remove_and_erase(&client, &node, "u1").await;
}
