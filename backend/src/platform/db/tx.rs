//! The transaction builder every multi-statement write goes through.

use surrealdb::types::SurrealValue;

use super::{Db, DbError, Query};

/// A transaction under construction: statements and their bindings, always checked and retried
/// on conflicts. Mutations add their audit entry to it (`Tx::audit`, in `platform::audit`).
///
/// Statements refer to bindings by `$name`; [`Tx::bind`] returns a fresh name so that pieces
/// written by different functions never clash.
#[derive(Clone, Default)]
pub struct Tx {
    statements: Vec<String>,
    bindings: Vec<(String, surrealdb::types::Value)>,
}

impl Tx {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds a value and returns its `$name`.
    pub fn bind(&mut self, value: impl SurrealValue) -> String {
        // Names are unique across all transactions, so that several can be merged into one.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "p{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.bindings.push((name.clone(), value.into_value()));
        format!("${name}")
    }

    /// Appends another transaction's statements and bindings (group commit).
    pub fn extend(&mut self, other: Tx) {
        self.statements.extend(other.statements);
        self.bindings.extend(other.bindings);
    }

    /// Adds a statement (without the trailing semicolon).
    pub fn push(&mut self, statement: impl Into<String>) -> &mut Self {
        self.statements.push(statement.into());
        self
    }

    /// Runs the statements as one transaction, retrying on conflicts.
    pub async fn run(&self, db: &Db) -> Result<surrealdb::IndexedResults, DbError> {
        let sql = format!(
            "BEGIN TRANSACTION;\n{};\nCOMMIT TRANSACTION;",
            self.statements.join(";\n")
        );
        let query = self
            .bindings
            .iter()
            .fold(Query::new(sql), |query, (name, value)| {
                query.bind(name, value.clone())
            });
        db.retry(|| query.run(db)).await
    }
}
