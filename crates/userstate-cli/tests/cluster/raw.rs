//! What a store holds as raw bytes, for the tests that prove personal data is never stored in
//! clear (ADR 0021): every file of a data directory, every row of a PostgreSQL schema.

use std::path::{Path, PathBuf};

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` whose raw bytes contain one of `needles`, with the needle.
pub fn found_in_files(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for path in files(dir) {
        // Only regular files hold bytes (`serve` keeps its admin socket beside them).
        if !std::fs::metadata(&path).unwrap().is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push((path.clone(), (*needle).to_owned()));
            }
        }
    }
    found
}

/// The `needles` that occur in `text`.
pub fn contains_any(text: &str, needles: &[&str]) -> Vec<String> {
    needles
        .iter()
        .filter(|n| text.contains(**n))
        .map(|n| (*n).to_owned())
        .collect()
}

/// Every row of every table of `schema` in the database at `url`, as text, one row a line.
pub async fn dump_schema(url: &str, schema: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap();
    assert!(!tables.is_empty(), "no table in schema {schema}");
    let mut text = String::new();
    for table in tables {
        let name: String = table.get(0);
        for row in client
            .query(&format!("SELECT t::text FROM {schema}.{name} t"), &[])
            .await
            .unwrap()
        {
            text.push_str(&row.get::<_, String>(0));
            text.push('\n');
        }
    }
    text
}
