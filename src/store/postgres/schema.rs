//! The Postgres store's tables, created and migrated in their own schema.
//!
//! | table | holds |
//! | --- | --- |
//! | `migrations (version, applied_at)` | every migration applied: a node refuses a schema newer than it knows |
//! | `store (id = 1, epoch, seq, clock_millis, clock_counter, horizon, hlc_horizon)` | the one position row: every commit locks it first, so positions follow commit order |
//! | `records (collection, key, value, deleted, hlc_millis, hlc_counter, hlc_node, seq)` | each key's latest write; `value` is its MessagePack encoding |
//! | `collections (name, head)` | each collection's latest stored position (its chain's head) |
//! | `revocations (kind, subject, issued_before)` | revoked token ids and subjects |
//!
//! Text columns that are compared or ordered use `COLLATE "C"`: byte order,
//! as the Rust code compares them.

use deadpool_postgres::Client;

use crate::store::StoreError;

/// One migration: its version and the statements that bring the schema to it.
struct Migration {
    version: i32,
    statements: &'static str,
}

/// Every migration, in order. `{schema}` is replaced by the quoted schema name.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    statements: r#"
CREATE TABLE {schema}.store (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL,
    seq bigint NOT NULL DEFAULT 0,
    clock_millis bigint NOT NULL DEFAULT 0,
    clock_counter integer NOT NULL DEFAULT 0,
    horizon bigint NOT NULL DEFAULT 0,
    hlc_horizon bigint NOT NULL DEFAULT 0
);
CREATE TABLE {schema}.records (
    collection text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    deleted boolean NOT NULL,
    hlc_millis bigint NOT NULL,
    hlc_counter integer NOT NULL,
    hlc_node text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE INDEX records_by_position ON {schema}.records (collection, seq);
CREATE INDEX records_tombstones ON {schema}.records (hlc_millis) WHERE deleted;
CREATE TABLE {schema}.collections (
    name text COLLATE "C" PRIMARY KEY,
    head bigint NOT NULL
);
CREATE TABLE {schema}.revocations (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('jti', 'subject')),
    subject text NOT NULL,
    issued_before bigint NOT NULL DEFAULT 0
);
"#,
}];

/// The newest schema version this build knows.
pub(super) const SCHEMA_VERSION: i32 = 1;

/// Creates the schema and applies missing migrations, one node at a time (an
/// advisory lock held for the transaction). Refuses a schema newer than this
/// build knows. Returns the store's epoch, drawn when the store row is first
/// created.
pub(super) async fn migrate(client: &mut Client, schema: &str, fresh_epoch: u64) -> Result<u64, StoreError> {
    let quoted = quote(schema);
    let tx = client.transaction().await.map_err(|e| super::err("starting the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("{schema}.migrate")])
        .await
        .map_err(|e| super::err("locking for the migration", e))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(|e| super::err("creating the schema", e))?;
    let row = tx
        .query_one(&format!("SELECT coalesce(max(version), 0) FROM {quoted}.migrations"), &[])
        .await
        .map_err(|e| super::err("reading the schema version", e))?;
    let current: i32 = row.get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "schema {schema} is at version {current}, newer than this syncgate knows ({SCHEMA_VERSION}): upgrade syncgate"
        )));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(&migration.statements.replace("{schema}", &quoted))
            .await
            .map_err(|e| super::err(&format!("applying migration {}", migration.version), e))?;
        tx.execute(&format!("INSERT INTO {quoted}.migrations (version) VALUES ($1)"), &[&migration.version])
            .await
            .map_err(|e| super::err("recording a migration", e))?;
    }
    tx.execute(
        &format!("INSERT INTO {quoted}.store (id, epoch) VALUES (1, $1) ON CONFLICT (id) DO NOTHING"),
        &[&(fresh_epoch as i64 & i64::MAX).max(1)],
    )
    .await
    .map_err(|e| super::err("creating the store row", e))?;
    let epoch: i64 = tx
        .query_one(&format!("SELECT epoch FROM {quoted}.store WHERE id = 1"), &[])
        .await
        .map_err(|e| super::err("reading the epoch", e))?
        .get(0);
    tx.commit().await.map_err(|e| super::err("committing the migration", e))?;
    Ok(epoch as u64)
}

/// Whether `name` may be a schema name: a plain lower-case SQL identifier, so
/// it needs no escaping and reads the same in `psql`.
pub(super) fn valid_schema_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && name.len() <= 63
}

/// The schema name as an SQL identifier.
pub(super) fn quote(schema: &str) -> String {
    format!("\"{schema}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["syncgate", "t_1", "_x", &"a".repeat(63)] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in ["", "1abc", "Upper", "a-b", "a;drop", "x\"y", &"a".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }
}
