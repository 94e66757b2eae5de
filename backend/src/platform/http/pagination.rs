//! Cursor pagination: `?limit=&cursor=` in, `{items, next_cursor}` out.
//!
//! Lists are ordered by record key (UUIDv7, so creation order) and the cursor is the last key of
//! the page, opaque to clients. A keyset cursor is stable under inserts: rows added while a
//! client pages never make it skip or repeat one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use outpost_mobile::api::Page;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::platform::db::{Db, DbError, Query};

/// Largest page a client may ask for.
pub const MAX_LIMIT: usize = 200;
/// Page size when the client does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// The pagination part of a list's query string.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Items per page.
    pub limit: usize,
    /// Start after this key.
    pub after: Option<String>,
}

impl PageParams {
    /// Checks the limit and decodes the cursor of a list keyed by Outpost ids.
    pub fn validate(&self) -> Result<PageRequest, ApiError> {
        self.validate_with(|key| uuid::Uuid::try_parse(key).is_ok())
    }

    /// Checks the limit and decodes the cursor of a list keyed by other ids (document ids).
    pub fn validate_any(&self) -> Result<PageRequest, ApiError> {
        self.validate_with(|key| {
            !key.is_empty()
                && key.len() <= 128
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    }

    fn validate_with(&self, key_ok: impl Fn(&str) -> bool) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = match &self.cursor {
            None => None,
            Some(cursor) => Some(
                URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .filter(|key| key_ok(key))
                    .ok_or_else(|| {
                        ApiError::invalid_field("cursor", "not a cursor from this list")
                    })?,
            ),
        };
        Ok(PageRequest { limit, after })
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is a next page.
pub fn page_of<T>(mut rows: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if rows.len() > request.limit {
        rows.truncate(request.limit);
        rows.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// Which end of a list comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Creation order.
    OldestFirst,
    /// Reverse creation order, read backwards by id: for tables that stay small (a user's
    /// notifications, the job queue, which housekeeping empties).
    NewestFirst,
    /// Reverse creation order, read forwards through the row's `newest` field (the id as an
    /// [`crate::platform::ids::newest_first_key_of`]), which every index the list's filters
    /// use ends with. For tables that grow without end, such as the audit log: a backward
    /// read costs the size of the store's in-memory table (see
    /// [`crate::platform::ids::newest_first_key`]).
    NewestFirstByKey,
}

/// Fetches one page of `table` rows matching `filter` (a condition with its bindings, empty for
/// all rows), in key order, and converts them for the API.
///
/// The cursor is a condition only on pages after the first, so a first page is a scan of the
/// table (or of the filter's index) from its end that stops when the page is full.
pub async fn fetch_page<Row, Item>(
    db: &Db,
    table: &str,
    filter: Query,
    page: &PageRequest,
    order: Order,
    id_of: impl Fn(&Item) -> String,
) -> Result<Page<Item>, DbError>
where
    Row: surrealdb::types::SurrealValue,
    Item: From<Row>,
{
    let (filter, order_by) = match order {
        Order::OldestFirst | Order::NewestFirst => {
            let (comparison, direction) = if order == Order::OldestFirst {
                (">", "ASC")
            } else {
                ("<", "DESC")
            };
            let filter = filter.and_when(
                &format!("id {comparison} type::record('{table}', $page_after)"),
                "page_after",
                page.after.clone(),
            );
            (filter, format!("id {direction}"))
        }
        Order::NewestFirstByKey => {
            let after = page
                .after
                .as_deref()
                .and_then(crate::platform::ids::newest_first_key_of);
            let filter = filter.and_when("newest > $page_after", "page_after", after);
            (filter, "newest ASC".to_string())
        }
    };
    let condition = match filter.sql().trim() {
        "" => String::new(),
        condition => format!("WHERE {condition}"),
    };
    let query = Query::new(format!(
        "SELECT * FROM {table} {condition} ORDER BY {order_by} LIMIT $page_limit"
    ));
    let rows: Vec<Row> = filter
        .rebind(query)
        .bind(
            "page_limit",
            i64::try_from(page.limit + 1).unwrap_or(i64::MAX),
        )
        .take(db, 0)
        .await?;
    Ok(page_of(
        rows.into_iter().map(Item::from).collect(),
        page,
        id_of,
    ))
}
