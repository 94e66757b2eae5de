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
    /// New rows by table, written after the statements by one `INSERT` per table: a group
    /// commit of many transactions then creates each table's rows in one statement rather than
    /// one each (SurrealDB parses, plans and binds every statement on its own).
    creates: Vec<(&'static str, Vec<surrealdb::types::Value>)>,
    /// Conditions on records as they were before the transaction, checked by one statement
    /// ahead of all others (see [`Tx::expect`]), so that a group commit checks all its
    /// documents at once rather than with one statement each.
    expectations: Vec<(&'static str, Vec<surrealdb::types::Value>)>,
    /// Items of audit entries shared by a group commit (see `Tx::audit_in_bulk`), turned into
    /// rows when the transaction runs.
    bulk_audit: Vec<crate::platform::audit::BulkItem>,
}

/// One condition of [`Tx::expect`].
#[derive(Debug, Clone, SurrealValue)]
struct Expectation {
    record: surrealdb::types::RecordId,
    value: surrealdb::types::Value,
    failure: String,
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
        for (table, rows) in other.creates {
            self.rows_of(table).extend(rows);
        }
        for (field, checks) in other.expectations {
            self.expectations_of(field).extend(checks);
        }
        self.bulk_audit.extend(other.bulk_audit);
    }

    /// Adds an item of an audit entry shared by a group commit.
    pub(crate) fn add_bulk_audit(&mut self, item: crate::platform::audit::BulkItem) -> &mut Self {
        self.bulk_audit.push(item);
        self
    }

    /// Fails the transaction, throwing `failure`, unless `record`'s `field` is `value` when
    /// the transaction starts (a compare-and-set: the record was not changed since the caller
    /// read it). Expectations are checked before any statement runs, one statement per field
    /// for a whole group commit.
    pub fn expect(
        &mut self,
        record: surrealdb::types::RecordId,
        field: &'static str,
        value: impl SurrealValue,
        failure: String,
    ) -> &mut Self {
        let check = Expectation {
            record,
            value: value.into_value(),
            failure,
        };
        self.expectations_of(field).push(check.into_value());
        self
    }

    fn expectations_of(&mut self, field: &'static str) -> &mut Vec<surrealdb::types::Value> {
        group(&mut self.expectations, field)
    }

    /// Creates `row` (an object with its record `id`) in `table`, after every statement of the
    /// transaction; it fails like `CREATE` if the id exists. For rows that nothing else in the
    /// transaction reads or changes (audit entries, history, document chunks).
    pub fn create(&mut self, table: &'static str, row: surrealdb::types::Value) -> &mut Self {
        self.rows_of(table).push(row);
        self
    }

    fn rows_of(&mut self, table: &'static str) -> &mut Vec<surrealdb::types::Value> {
        group(&mut self.creates, table)
    }

    /// Adds a statement (without the trailing semicolon).
    pub fn push(&mut self, statement: impl Into<String>) -> &mut Self {
        self.statements.push(statement.into());
        self
    }

    /// Runs the statements as one transaction, retrying on conflicts.
    pub async fn run(&self, db: &Db) -> Result<surrealdb::IndexedResults, DbError> {
        let mut creates = self.creates.clone();
        if !self.bulk_audit.is_empty() {
            group(&mut creates, "audit")
                .extend(crate::platform::audit::bulk_rows(&self.bulk_audit));
        }
        let inserts = creates
            .iter()
            .enumerate()
            .map(|(i, (table, _))| format!("INSERT INTO {table} $created{i} RETURN NONE"));
        // All expectations in one statement, ahead of the writes (which may change the
        // fields they read).
        let checks = self.expectations.iter().enumerate().map(|(i, (field, _))| {
            format!(
                "IF $expected{i}[WHERE record.{field} != value] {{ THROW $expected{i}[WHERE record.{field} != value][0].failure }}"
            )
        });
        let statements: Vec<String> = checks
            .chain(self.statements.iter().cloned())
            .chain(inserts)
            .collect();
        let sql = format!(
            "BEGIN TRANSACTION;\n{};\nCOMMIT TRANSACTION;",
            statements.join(";\n")
        );
        let query = creates
            .into_iter()
            .enumerate()
            .fold(Query::new(sql), |query, (i, (_, rows))| {
                query.bind(&format!("created{i}"), rows)
            });
        let query = self
            .expectations
            .iter()
            .enumerate()
            .fold(query, |query, (i, (_, checks))| {
                query.bind(&format!("expected{i}"), checks.clone())
            });
        let query = self.bindings.iter().fold(query, |query, (name, value)| {
            query.bind(name, value.clone())
        });
        db.retry(|| query.run(db)).await
    }
}

/// The values kept under `key` in `groups` (a short list of named groups), added if missing.
fn group<'a>(
    groups: &'a mut Vec<(&'static str, Vec<surrealdb::types::Value>)>,
    key: &'static str,
) -> &'a mut Vec<surrealdb::types::Value> {
    let at = match groups.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            groups.push((key, Vec::new()));
            groups.len() - 1
        }
    };
    &mut groups[at].1
}
