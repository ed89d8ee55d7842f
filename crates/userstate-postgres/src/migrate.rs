//! Versioned schema migrations, run on connect.
//!
//! All pending migrations run in one transaction that first takes a transaction-scoped
//! advisory lock keyed by the schema name, so two processes starting at once apply each
//! migration exactly once: the second waits, then finds nothing left to do. Applied migrations
//! are recorded in `schema_migrations` with a checksum; a changed migration file is refused.

use tokio_postgres::Client;
use tracing::{info, warn};
use userstate::StoreError;

use crate::error::store_error;
use crate::sql::{MIGRATIONS, MIGRATIONS_TABLE};

/// The first key of the advisory lock (`'usst'`); the second is `hashtext(schema)`.
const LOCK_CLASS: i32 = 0x7573_7374;

/// Creates `schema` if missing and applies every pending migration. Idempotent.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let err = |e| store_error("running migrations", e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &schema],
    )
    .await
    .map_err(err)?;
    // `schema` is validated as a plain identifier by the builder.
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await
        .map_err(err)?;
    tx.batch_execute(MIGRATIONS_TABLE).await.map_err(err)?;
    let applied: Vec<(i32, String)> = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(err)?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut chain_added = false;
    for migration in MIGRATIONS {
        let checksum = checksum(migration.sql);
        match applied.iter().find(|(v, _)| *v == migration.version) {
            Some((_, found)) if *found == checksum => continue,
            Some((_, found)) => {
                return Err(StoreError::Corrupt {
                    location: format!("{schema}.schema_migrations version {}", migration.version),
                    reason: format!(
                        "migration {} was applied with checksum {found}, this build has {checksum}",
                        migration.name
                    ),
                })
            }
            None => {
                info!(schema, migration = migration.name, "applying migration");
                tx.batch_execute(migration.sql).await.map_err(err)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&migration.version, &migration.name, &checksum],
                )
                .await
                .map_err(err)?;
                chain_added |= migration.name == "0004_hash_chain";
            }
        }
    }
    if chain_added {
        chain_existing_events(&tx).await?;
    }
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some((newest, _)) = applied.iter().rev().find(|(v, _)| *v > known) {
        warn!(
            schema,
            newest, known, "the database has migrations newer than this build"
        );
    }
    tx.commit().await.map_err(err)
}

/// Chains the events written before the hash chain (migration 0004), once, in the migration's
/// transaction and under the position lock: the content digest needs the canonical JSON that
/// only the client computes (ADR 0020).
async fn chain_existing_events(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let err = |e| store_error("chaining the events written before the hash chain", e);
    tx.query_one(crate::sql::LOCK_POSITION, &[])
        .await
        .map_err(err)?;
    let mut previous = userstate::chain::EventHash::ZERO;
    let mut from: i64 = 1;
    let mut chained = 0u64;
    loop {
        let rows = tx
            .query(crate::sql::READ_ALL, &[&from, &4096i64])
            .await
            .map_err(err)?;
        let Some(last) = rows.last() else { break };
        from = last.try_get::<_, i64>(2).map_err(err)? + 1;
        for row in &rows {
            let event = crate::rows::decode_event(row)?;
            let hash = event.chain_hash(&previous);
            tx.execute(
                "UPDATE events SET hash = $1 WHERE position = $2",
                &[&hash.0.as_slice(), &crate::rows::to_i64(event.position)],
            )
            .await
            .map_err(err)?;
            previous = hash;
            chained += 1;
        }
    }
    tx.execute(
        "UPDATE position_counter SET head_hash = $1 WHERE id = 1",
        &[&previous.0.as_slice()],
    )
    .await
    .map_err(err)?;
    if chained > 0 {
        info!(
            events = chained,
            "chained the events written before the hash chain"
        );
    }
    Ok(())
}

/// FNV-1a (64 bit) of the migration text, as hex: stable across builds and platforms.
fn checksum(sql: &str) -> String {
    let hash = sql.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_stable_and_distinguish_texts() {
        assert_eq!(checksum(""), "cbf29ce484222325");
        assert_ne!(checksum("a"), checksum("b"));
    }

    #[test]
    fn migration_versions_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
