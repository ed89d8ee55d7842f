//! A PostgreSQL database of its own per test, on the server of `USERSTATE_TEST_POSTGRES_URL`
//! (skip when unset; fail under `CI=true` when unset or unreachable), dropped afterwards.

/// The variable naming the test server.
pub const URL_VAR: &str = "USERSTATE_TEST_POSTGRES_URL";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// A fresh database; dropped (connections terminated) when the guard drops.
pub struct Database {
    admin_url: String,
    name: String,
    /// The URL of the fresh database.
    pub url: String,
}

impl Database {
    /// Creates a database named after `label`, or `None` (printed reason) to skip.
    pub async fn create(label: &str) -> Option<Database> {
        let admin_url = match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ if in_ci() => panic!("{URL_VAR} must be set when CI=true"),
            _ => {
                eprintln!(
                    "skipped: {URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
                );
                return None;
            }
        };
        let client = match tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(e) if in_ci() => panic!("PostgreSQL from {URL_VAR} is unreachable under CI: {e}"),
            Err(e) => {
                eprintln!("skipped: PostgreSQL from {URL_VAR} is unreachable: {e}");
                return None;
            }
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("us_{label}_{}", &id[..12]);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        let url = with_database(&admin_url, &name);
        Some(Database {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("could not drop test database {name}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

#[test]
fn database_names_replace_the_path() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/test?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h:5", "x"), "postgres://h:5/x");
}
