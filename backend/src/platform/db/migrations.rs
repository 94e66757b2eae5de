//! Versioned schema migrations, applied at start, recorded, never re-applied.
//!
//! Each migration runs in one transaction together with the row that records it, so a migration
//! that fails leaves the store exactly as it was, and the server refuses to start.
//!
//! A migration that rewrites every row of a big table (a backfill) runs instead over slices of
//! the table, one transaction each, recording how far it got: one transaction over millions of
//! rows holds them all in memory (an audit backfill of 400,000 entries took the server from 150
//! MiB to 1.8 GiB), and a crash in the middle resumes where it stopped. Its statement must be
//! safe to run twice over a row, and it is recorded as applied when the last slice is done.

use sha2::{Digest, Sha256};
use surrealdb::types::SurrealValue;

use super::{Db, DbError, Query};

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing from 1.
    pub version: u32,
    /// The file name, for messages.
    pub name: &'static str,
    /// SurrealQL, run inside one transaction.
    pub sql: &'static str,
    /// For a backfill: the table whose rows `sql` rewrites, given each slice's record ids as
    /// `$rows` (see the module's note).
    pub batched_over: Option<&'static str>,
    /// The checksum of an earlier text of this migration that a store may have recorded: a
    /// migration rewritten because its first text could not run on big stores (see 0014).
    pub replaces: Option<&'static str>,
}

/// Rows a backfill rewrites per transaction.
const BACKFILL_SLICE: usize = 2_000;

/// One entry of [`MIGRATIONS`]: the version and the file under `migrations/`, whose name is
/// also the migration's name in messages.
macro_rules! migration {
    ($version:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("migrations/", $file)),
            batched_over: None,
            replaces: None,
        }
    };
    ($version:literal, $file:literal, over $table:literal) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("migrations/", $file)),
            batched_over: Some($table),
            replaces: None,
        }
    };
    ($version:literal, $file:literal, over $table:literal, replacing $checksum:literal) => {
        Migration {
            version: $version,
            name: $file,
            sql: include_str!(concat!("migrations/", $file)),
            batched_over: Some($table),
            replaces: Some($checksum),
        }
    };
}

/// Every migration of this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_identity.surql"),
    migration!(2, "0002_sync.surql"),
    migration!(3, "0003_jobs.surql"),
    migration!(4, "0004_tasks.surql"),
    migration!(5, "0005_customers.surql"),
    migration!(6, "0006_customer_owner_order.surql"),
    migration!(7, "0007_drop_customer_owner_index.surql"),
    migration!(8, "0008_slimmer_customer_indexes.surql"),
    migration!(9, "0009_drop_customer_pool_state_index.surql"),
    migration!(10, "0010_customer_terms_table.surql"),
    migration!(11, "0011_customer_due_index.surql"),
    migration!(12, "0012_document_chunk_ranges.surql"),
    migration!(13, "0013_schemaless_write_path.surql"),
    migration!(14, "0014_follow_up_occurred.surql", over "follow_up",
        replacing "a229baceae621ca4a416f0143a2ff6c986bc0ca7fc3bd35ed9ad2e006c62fe29"),
    migration!(15, "0015_audit_newest_keys.surql", over "audit"),
    migration!(16, "0016_follow_up_timeline_keys.surql", over "follow_up"),
    migration!(17, "0017_task_timeline_keys.surql", over "task"),
    migration!(18, "0018_event_timeline_keys.surql", over "event"),
    migration!(19, "0019_newest_first_indexes.surql"),
    migration!(20, "0020_customer_state_list_keys.surql"),
    migration!(21, "0021_customer_listed.surql", over "customer"),
    migration!(22, "0022_customer_list_walk_indexes.surql"),
    migration!(23, "0023_customer_listed_level_list_keys.surql"),
    migration!(24, "0024_keyed_custody_history.surql"),
    migration!(25, "0025_move_custody_history.surql", over "customer_history"),
    migration!(26, "0026_drop_customer_history.surql"),
    migration!(27, "0027_customer_holder.surql", over "customer"),
    migration!(28, "0028_customer_holder_indexes.surql"),
];

#[derive(Debug, SurrealValue)]
struct Applied {
    version: i64,
    name: String,
    checksum: String,
}

fn checksum(sql: &str) -> String {
    let digest = Sha256::digest(sql.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies the migrations of `migrations` that the store lacks; returns how many ran.
///
/// Refuses to touch a store that records a migration this build does not know (a newer Outpost
/// migrated it) or whose recorded text differs from ours.
pub async fn apply_migrations(db: &Db, migrations: &[Migration]) -> Result<usize, DbError> {
    Query::new(
        "DEFINE TABLE IF NOT EXISTS migration SCHEMAFULL;
             DEFINE FIELD IF NOT EXISTS version ON migration TYPE int;
             DEFINE FIELD IF NOT EXISTS name ON migration TYPE string;
             DEFINE FIELD IF NOT EXISTS checksum ON migration TYPE string;
             DEFINE FIELD IF NOT EXISTS applied_at ON migration TYPE datetime;
             DEFINE TABLE IF NOT EXISTS migration_progress SCHEMALESS;",
    )
    .run(db)
    .await?;
    let applied: Vec<Applied> =
        Query::new("SELECT version, name, checksum FROM migration ORDER BY version")
            .take(db, 0)
            .await?;
    for row in &applied {
        let known = migrations
            .iter()
            .find(|m| i64::from(m.version) == row.version);
        match known {
            None => {
                return Err(DbError::SchemaMismatch(format!(
                    "the store has migration {} ({}), which this build does not know; \
                     it was migrated by a newer Outpost",
                    row.version, row.name
                )));
            }
            Some(m)
                if checksum(m.sql) != row.checksum && m.replaces != Some(row.checksum.as_str()) =>
            {
                return Err(DbError::SchemaMismatch(format!(
                    "migration {} ({}) was changed after it was applied",
                    m.version, m.name
                )));
            }
            Some(_) => {}
        }
    }
    let mut ran = 0;
    for migration in migrations {
        if applied
            .iter()
            .any(|a| a.version == i64::from(migration.version))
        {
            continue;
        }
        let body = match migration.batched_over {
            Some(table) => {
                backfill(db, migration, table).await?;
                ""
            }
            None => migration.sql,
        };
        let sql = format!(
            "BEGIN TRANSACTION;\n{}\n;CREATE type::record('migration', $version) SET version = $version, \
             name = $name, checksum = $checksum, applied_at = time::now();\n\
             DELETE type::record('migration_progress', $version);\nCOMMIT TRANSACTION;",
            body
        );
        let bindings = [
            ("version", i64::from(migration.version).into_value()),
            ("name", migration.name.to_string().into_value()),
            ("checksum", checksum(migration.sql).into_value()),
        ]
        .map(|(name, value)| (name.to_string(), value));
        db.send(&sql, &bindings)
            .await
            .and_then(super::check)
            .map_err(|source| DbError::Migration {
                version: migration.version,
                name: migration.name.to_string(),
                source: Box::new(source),
            })?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        ran += 1;
    }
    Ok(ran)
}

/// Runs a backfill's statement over `table` one slice of [`BACKFILL_SLICE`] rows at a time, in
/// key order, each slice in its own transaction with the last key it reached, from where an
/// interrupted run left off.
async fn backfill(db: &Db, migration: &Migration, table: &str) -> Result<(), DbError> {
    let version = i64::from(migration.version);
    // A failed slice is rolled back alone; the next start resumes after the last one done.
    let failed = |error: DbError| match error {
        DbError::Query(source) => DbError::Migration {
            version: migration.version,
            name: migration.name.to_string(),
            source,
        },
        other => other,
    };
    let mut after: Option<surrealdb::types::RecordId> =
        Query::new("SELECT VALUE after FROM ONLY type::record('migration_progress', $version)")
            .bind("version", version)
            .take(db, 0)
            .await
            .map_err(failed)?;
    let mut rewritten = 0;
    loop {
        // A table or a record range comes in key order, so the slices need no `ORDER BY`
        // (dropping it changed nothing measurable: the time is in the updates).
        // A range from the last key reached starts with that key, hence one row more.
        let (next, slice) = match &after {
            None => (
                Query::new(format!("SELECT VALUE id FROM {table} LIMIT $slice")),
                BACKFILL_SLICE,
            ),
            Some(last) => (
                Query::new(format!(
                    "SELECT VALUE id FROM type::record('{table}', $after..) LIMIT $slice"
                ))
                .bind("after", last.key.clone()),
                BACKFILL_SLICE + 1,
            ),
        };
        let mut rows: Vec<surrealdb::types::RecordId> = next
            .bind("slice", i64::try_from(slice).unwrap_or(i64::MAX))
            .take(db, 0)
            .await
            .map_err(failed)?;
        rows.retain(|id| Some(id) != after.as_ref());
        let Some(last) = rows.last().cloned() else {
            break;
        };
        let rows_in_slice = rows.len();
        rewritten += rows_in_slice;
        Query::new(format!(
            "BEGIN TRANSACTION;\n{}\n;UPSERT type::record('migration_progress', $version) SET after = $last;\nCOMMIT TRANSACTION;",
            migration.sql
        ))
        .bind("rows", rows)
        .bind("version", version)
        .bind("last", last.clone())
        .run(db)
        .await
        .map_err(failed)?;
        after = Some(last);
        // A long upgrade says how far it is (every 100,000 rows at 2,000 a slice); every
        // slice, at debug.
        tracing::debug!(
            version = migration.version,
            table,
            rows = rewritten,
            "backfill slice committed"
        );
        if rewritten % (BACKFILL_SLICE * 50) < rows_in_slice {
            tracing::info!(
                version = migration.version,
                table,
                rows = rewritten,
                "backfilling"
            );
        }
    }
    tracing::info!(
        version = migration.version,
        table,
        rows = rewritten,
        "backfilled"
    );
    Ok(())
}

/// Whether every migration of this build is recorded in the store (for `/readyz`).
pub async fn migrations_current(db: &Db) -> Result<bool, DbError> {
    let latest: Option<i64> = Query::new("RETURN math::max((SELECT VALUE version FROM migration))")
        .take(db, 0)
        .await?;
    let expected = MIGRATIONS.last().map_or(0, |m| i64::from(m.version));
    Ok(latest.unwrap_or(0) >= expected)
}
