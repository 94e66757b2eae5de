//! Finding customers: the list with its filters, search by name (Chinese, Latin, pinyin and
//! initials, partial), phone (any format) and email through the term index, and the export of
//! exactly what the list shows the caller.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use serde::Deserialize;
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::IntoParams;

use super::files::{self, FileFormat};
use super::keys;
use super::{Customer, CustomerRow};
use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission, Scope};
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::http::ApiQuery;
use crate::platform::http::pagination::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::platform::ids;

/// Filters and search of the customer list; they combine with AND.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerFilter {
    /// Search: a name or part of it (Chinese or Latin, pinyin such as `zhangsan`, initials
    /// such as `zs`), a phone number or its beginning in any format, or an email.
    pub q: Option<String>,
    /// A phone number (any format) or its beginning.
    pub phone: Option<String>,
    /// An email address.
    pub email: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// Owned by this user.
    pub owner_id: Option<String>,
    /// `A` to `D`.
    pub level: Option<String>,
    /// `owned` or `pool`.
    pub state: Option<String>,
    /// In this pool.
    pub pool_id: Option<String>,
    /// Last follow-up at or after this time (RFC 3339).
    pub follow_up_after: Option<DateTime<Utc>>,
    /// Last follow-up before this time (RFC 3339).
    pub follow_up_before: Option<DateTime<Utc>>,
    /// `created` (oldest first, the default) or `-created` (newest first).
    pub sort: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Term-index rows read per round while a search fills a page.
const TERM_CHUNK: i64 = 256;
/// Customer rows read at least per round trip while a search fills a page.
const MIN_ROW_WINDOW: usize = 16;
/// Term-index rows one page may scan before it answers with what it has (and a cursor).
const MAX_TERMS_SCANNED: usize = 2048;
/// Owners whose parts of the list order a scoped list walks one by one; a wider scope walks
/// every listed customer with the scope checked beside it.
const MAX_OWNERS_WALKED: usize = 32;

/// The conditions on customer rows: scope, not deleted, and every filter but the search term.
struct RowConditions {
    /// All of them, joined by AND, with their values bound.
    query: Query,
    /// Whether the caller's scope is narrower than everything.
    scoped: bool,
    /// Whether a condition other than visibility, `pool_id`, `state` and `level` applies. Some parts of
    /// the list order hold every row condition but these (see [`Residual`]); such a part needs
    /// no condition checked beside it, and then reads only the page it returns.
    filtered: bool,
}

/// See [`RowConditions`].
fn row_conditions(actor: &Actor, filter: &CustomerFilter) -> Result<RowConditions, ApiError> {
    let scope = actor.scope.filter("owner");
    let scoped = !matches!(actor.scope, Scope::All);
    let mut conditions = vec![
        "state != 'deleted'".to_string(),
        // Pool customers are seen through the pool they are in, by its members and admins.
        format!(
            "(state = 'pool' AND $pool != NONE OR ({}))",
            scope.condition
        ),
    ];
    if let Some(state) = &filter.state
        && !["owned", "pool"].contains(&state.as_str())
    {
        return Err(ApiError::invalid_field(
            "state",
            "must be `owned` or `pool`",
        ));
    }
    if let Some(level) = &filter.level
        && !outpost_mobile::records::customer::LEVELS.contains(&level.as_str())
    {
        return Err(ApiError::invalid_field(
            "level",
            "must be one of A, B, C, D",
        ));
    }
    let add = |conditions: &mut Vec<String>, condition: &str, present: bool| {
        if present {
            conditions.push(condition.to_string());
        }
    };
    add(&mut conditions, "tags CONTAINS $tag", filter.tag.is_some());
    add(&mut conditions, "owner = $owner", filter.owner_id.is_some());
    add(&mut conditions, "level = $level", filter.level.is_some());
    add(&mut conditions, "pool = $pool", filter.pool_id.is_some());
    add(
        &mut conditions,
        "last_follow_up_at >= $follow_up_after",
        filter.follow_up_after.is_some(),
    );
    add(
        &mut conditions,
        "last_follow_up_at < $follow_up_before",
        filter.follow_up_before.is_some(),
    );
    let phone_keys: Vec<String> = filter
        .phone
        .as_deref()
        .map(keys::phone_keys)
        .unwrap_or_default();
    if filter.phone.is_some() {
        if phone_keys.is_empty() {
            return Err(ApiError::invalid_field("phone", "has no digits"));
        }
        conditions.push(
            "array::any(phone_keys, |$k| array::any($phone_keys, |$p| string::starts_with($k, $p)))"
                .into(),
        );
    }
    add(
        &mut conditions,
        "email_keys CONTAINS $email",
        filter.email.is_some(),
    );
    // A caller who sees phone numbers masked could recover them digit by digit with prefix
    // searches; for them, a partial number only finds their own customers.
    let partial_phone = [filter.phone.as_deref(), filter.q.as_deref()]
        .into_iter()
        .flatten()
        .any(|raw| {
            keys::search_term(raw).is_some_and(|t| t.starts_with(keys::PHONE_TERM))
                && keys::phone_e164(raw).is_none()
        });
    let me_only = partial_phone && !actor.can(Permission::CustomerPhoneFull);
    add(&mut conditions, "owner = $me_only", me_only);
    add(&mut conditions, "state = $state", filter.state.is_some());
    let CustomerFilter {
        q,
        phone,
        email,
        tag,
        owner_id,
        follow_up_after,
        follow_up_before,
        level: _,
        state: _,
        pool_id: _,
        sort: _,
        limit: _,
        cursor: _,
    } = filter;
    let filtered = me_only
        || [q, phone, email, tag, owner_id].iter().any(|f| f.is_some())
        || follow_up_after.is_some()
        || follow_up_before.is_some();
    let query = Query::new(conditions.join(" AND "))
        .bind("scope_owners", scope.owners)
        .bind("tag", filter.tag.clone())
        .bind("owner", filter.owner_id.clone())
        .bind("level", filter.level.clone())
        .bind("state", filter.state.clone())
        .bind("pool", filter.pool_id.clone())
        .bind("follow_up_after", filter.follow_up_after)
        .bind("follow_up_before", filter.follow_up_before)
        .bind("phone_keys", phone_keys)
        .bind("email", filter.email.as_deref().map(keys::email_key))
        .bind("me_only", me_only.then(|| actor.user_id.clone()));
    Ok(RowConditions {
        query,
        scoped,
        filtered,
    })
}

/// Pool customers are listed only to members and admins of the pool named by `pool_id`.
async fn check_pool_access(
    state: &AppState,
    actor: &Actor,
    filter: &CustomerFilter,
) -> Result<(), ApiError> {
    if let Some(pool_id) = &filter.pool_id {
        let pool = crate::crm::pool::require_pool(state, pool_id, "pool_id").await?;
        if !pool.may_claim(state, actor).await? && !pool.may_configure(actor) {
            return Err(ApiError::NotAllowed(
                "only the pool's members and admins see its customers".into(),
            ));
        }
    }
    Ok(())
}

/// One page of customers the caller may see, as they may see them.
pub async fn find(
    state: &AppState,
    actor: &Actor,
    filter: &CustomerFilter,
) -> Result<Page<Customer>, ApiError> {
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    check_pool_access(state, actor, filter).await?;
    let RowConditions {
        query: conditions,
        scoped,
        filtered,
    } = row_conditions(actor, filter)?;
    // A search term drives the query through the index: the phone, else the email, else q.
    let term = if let Some(phone) = &filter.phone {
        keys::search_term(phone)
            .filter(|t| t.starts_with(keys::PHONE_TERM))
            .or_else(|| {
                keys::phone_keys(phone)
                    .first()
                    .map(|k| format!("{}{k}", keys::PHONE_TERM))
            })
    } else if let Some(email) = &filter.email {
        Some(format!("{}{}", keys::EMAIL_TERM, keys::email_key(email)))
    } else if let Some(q) = &filter.q {
        Some(keys::search_term(q).ok_or_else(|| ApiError::invalid_field("q", "is empty"))?)
    } else {
        None
    };
    let page = match term {
        Some(term) => by_term(state, &conditions, &term, limit, filter.cursor.as_deref()).await?,
        None => {
            let residual = Residual {
                scoped,
                filtered,
                by_state: filter.state.is_some(),
                by_level: filter.level.is_some(),
            };
            by_key(state, &actor.scope, &conditions, residual, filter, limit).await?
        }
    };
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(|c| Customer::from(c).for_actor(actor))
            .collect(),
        next_cursor: page.next_cursor,
    })
}

/// A list in key order (creation order), optionally newest first.
async fn by_key(
    state: &AppState,
    actor_scope: &Scope,
    conditions: &Query,
    residual: Residual,
    filter: &CustomerFilter,
    limit: usize,
) -> Result<Page<CustomerRow>, ApiError> {
    let newest_first = match filter.sort.as_deref() {
        None | Some("created") => false,
        Some("-created") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "sort",
                "must be `created` or `-created`",
            ));
        }
    };
    let after = match &filter.cursor {
        None => None,
        Some(cursor) => Some(
            decode_cursor(cursor)
                .filter(|c| {
                    c.split_once('|')
                        .is_some_and(|(_, doc)| outpost_sync::DocumentId::parse(doc).is_some())
                })
                .ok_or_else(|| ApiError::invalid_field("cursor", "not a cursor from this list"))?,
        ),
    };
    // The list key's index gives the order and stops at the page's end (newest first has its
    // own key, read forward).
    let key = if newest_first {
        "list_key_newest"
    } else {
        "list_key"
    };
    let parts = walk_of(state, actor_scope, filter).await?;
    if parts.is_empty() {
        return Ok(page_by_key(Vec::new(), limit, newest_first));
    }
    // Each part's fields are in the text as equalities, so the planner reads its compound
    // index from `(values, $after)` on. SurrealDB 3.3 stops such a read at the limit only when
    // no other condition is left to check; otherwise it reads the index in batches of 1,000.
    // Every walk is a subquery of one statement, so all of them read one snapshot: a customer
    // that changes hands (or state) meanwhile is listed once, in its part as of that instant,
    // rather than twice or not at all.
    let mut query = conditions
        .clone()
        .bind("after", after.unwrap_or_default())
        .bind("limit", i64::try_from(limit + 1).unwrap_or(i64::MAX));
    let mut walks = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let mut equalities = String::new();
        for (field, value) in part.equalities() {
            match value {
                Some(value) => {
                    equalities.push_str(&format!("{field} = $walked_{field}{i} AND "));
                    query = query.bind(&format!("walked_{field}{i}"), value.to_string());
                }
                None => equalities.push_str(&format!("{field} = true AND ")),
            }
        }
        let rest = if residual.needed(part) {
            format!(" AND {}", conditions.sql())
        } else {
            String::new()
        };
        walks.push(format!(
            "(SELECT * OMIT terms, phone_keys, email_keys FROM customer WITH INDEX customer_{}_{key} WHERE {equalities}{key} > $after{rest} ORDER BY {key} LIMIT $limit)",
            part.index()
        ));
    }
    let query = query.rebind(Query::new(format!("RETURN [{}]", walks.join(", "))));
    let parts: Vec<Vec<CustomerRow>> = query.take(&state.db, 0).await?;
    let mut rows: Vec<CustomerRow> = parts.into_iter().flatten().collect();
    rows.sort_by(|a, b| {
        if newest_first {
            a.list_key_newest.cmp(&b.list_key_newest)
        } else {
            a.list_key.cmp(&b.list_key)
        }
    });
    Ok(page_by_key(rows, limit, newest_first))
}

/// One index range a list reads in key order: a compound index's fields before the key, as
/// equalities. A list reads the parts of the order that hold what it may show and merges
/// them, so a page never walks past rows it cannot show.
#[derive(Debug)]
enum Part {
    /// One holder's customers (see [`super::holder`]), through `(holder, key)`: a rep's own
    /// (`u:<user>`) or a pool's claimable ones (`p:<pool>`).
    Held {
        /// The holder.
        holder: String,
        /// Whether every row of the part is within the caller's scope, state and pool
        /// conditions, so only the other filters (and the level) need checking beside it.
        whole: bool,
    },
    /// Every listed customer, through `(listed, key)` with `listed = true`: an all-seeing
    /// caller's list, or a scope too wide to walk owner by owner (with the scope checked
    /// beside it). A change of hands does not move a customer there.
    Listed,
    /// Every listed customer of one pool, whoever holds it, through `(listed, pool, key)`: a
    /// pool's list as an all-seeing caller (or a scope too wide to walk) reads it.
    Pool(String),
    /// The listed customers of one level, through `(listed, level, key)`, for an all-seeing
    /// caller.
    Level(String),
}

impl Part {
    /// The part of `owner`'s customers.
    fn owner(owner: &str, whole: bool) -> Self {
        Self::Held {
            holder: super::owner_holder(owner),
            whole,
        }
    }

    /// The part of `pool`'s claimable customers: each is in the pool, and the caller may list
    /// the pool (its access was checked, or the caller sees everything).
    fn claimable(pool: &str) -> Self {
        Self::Held {
            holder: super::pool_holder(pool),
            whole: true,
        }
    }

    /// The index's name between `customer_` and the key's name.
    fn index(&self) -> &'static str {
        match self {
            Self::Held { .. } => "holder",
            Self::Listed => "listed",
            Self::Pool(_) => "listed_pool",
            Self::Level(_) => "listed_level",
        }
    }

    /// The equalities before the key: each field with its value (`None`: `true`).
    fn equalities(&self) -> Vec<(&'static str, Option<&str>)> {
        match self {
            Self::Held { holder, .. } => vec![("holder", Some(holder))],
            Self::Listed => vec![("listed", None)],
            Self::Pool(pool) => vec![("listed", None), ("pool", Some(pool))],
            Self::Level(level) => vec![("listed", None), ("level", Some(level))],
        }
    }
}

/// When a part of a walk needs the row conditions checked beside it.
#[derive(Debug, Clone, Copy)]
struct Residual {
    /// See [`RowConditions::scoped`].
    scoped: bool,
    /// See [`RowConditions::filtered`].
    filtered: bool,
    /// Whether the list is filtered by state.
    by_state: bool,
    /// Whether the list is filtered by level.
    by_level: bool,
}

impl Residual {
    /// Whether `part` may hold rows the row conditions refuse. No part holds a deleted
    /// customer. A holder's part holds one state; the walk marks it whole when it holds
    /// nothing outside the caller's scope and the list's pool. The listed parts hold every
    /// state and owner (and the level's part only its level). Other filters are always
    /// checked.
    fn needed(self, part: &Part) -> bool {
        if self.filtered {
            return true;
        }
        match part {
            Part::Held { whole, .. } => !whole || self.by_level,
            Part::Listed | Part::Pool(_) => self.scoped || self.by_state || self.by_level,
            Part::Level(_) => self.scoped || self.by_state,
        }
    }
}

/// The parts of the list order that serve `filter` for a caller who sees `scope`.
async fn walk_of(
    state: &AppState,
    scope: &Scope,
    filter: &CustomerFilter,
) -> Result<Vec<Part>, ApiError> {
    let all = matches!(scope, Scope::All);
    let pool_only = filter.state.as_deref() == Some("pool");
    let owned_only = filter.state.as_deref() == Some("owned");
    // The owners to walk one by one, when there are few enough.
    let owners: Option<Vec<String>> = match (&filter.owner_id, scope) {
        (Some(owner), _) => Some(vec![owner.clone()]),
        (None, Scope::Owners(owners)) if owners.len() <= MAX_OWNERS_WALKED => {
            Some(owners.iter().cloned().collect())
        }
        _ => None,
    };
    Ok(match &filter.pool_id {
        // A customer in the pool has no owner (a return or a release takes it).
        Some(_) if pool_only && filter.owner_id.is_some() => Vec::new(),
        Some(pool) if pool_only => vec![Part::claimable(pool)],
        // The pool's customers held by the owners, checked for the pool beside the walk, and
        // (unless an owner or the state says otherwise) its claimable ones.
        Some(pool) => match owners {
            Some(owners) => {
                let mut parts: Vec<Part> = owners.iter().map(|o| Part::owner(o, false)).collect();
                if !owned_only && filter.owner_id.is_none() {
                    parts.push(Part::claimable(pool));
                }
                parts
            }
            None => vec![Part::Pool(pool.clone())],
        },
        // Pool customers are listed to a scoped caller only through their pool.
        None if pool_only && (filter.owner_id.is_some() || !all) => Vec::new(),
        // A filter by owner may name someone outside the scope, which is then checked beside
        // the owner's part; the scope's own owners need no such check.
        None if owners.is_some() => {
            let whole = filter.owner_id.is_none();
            owners
                .unwrap_or_default()
                .iter()
                .map(|o| Part::owner(o, whole))
                .collect()
        }
        None if all && filter.level.is_some() && !pool_only => {
            vec![Part::Level(filter.level.clone().unwrap_or_default())]
        }
        // Every customer in the pool is in one of the pools (a few per company, never
        // deleted).
        None if pool_only => {
            let pools: Vec<String> = Query::new("SELECT VALUE record::id(id) FROM pool")
                .take(&state.db, 0)
                .await?;
            pools.iter().map(|p| Part::claimable(p)).collect()
        }
        None => vec![Part::Listed],
    })
}

/// A page of up to `limit` rows in key order (`rows` holds one more when the list goes on),
/// with the cursor after its last row.
fn page_by_key(mut rows: Vec<CustomerRow>, limit: usize, newest_first: bool) -> Page<CustomerRow> {
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| {
            encode_cursor(if newest_first {
                &r.list_key_newest
            } else {
                &r.list_key
            })
        })
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// One entry of the term index, read from its record id `customer_term:[term, doc]`.
#[derive(Debug, SurrealValue)]
struct TermRow {
    term: String,
    doc: String,
}

impl TermRow {
    /// The entry's place in term order, which is what a search cursor holds.
    fn cursor(&self) -> String {
        encode_cursor(&format!(
            "{}{}{}",
            self.term,
            keys::TERM_SEPARATOR,
            self.doc
        ))
    }
}

/// A search through the term index: every term starting with `term`, in term order, joined to
/// the customer rows that pass `conditions`, until the page is full. A page that scanned many
/// terms without filling up answers early with a cursor, so no search runs unbounded.
async fn by_term(
    state: &AppState,
    conditions: &Query,
    term: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<CustomerRow>, ApiError> {
    // The scan starts after `[term]`, which sorts before every `[term, doc]` entry, or after
    // the cursor's entry.
    let mut after: (String, Option<String>) = match cursor {
        None => (term.to_string(), None),
        Some(cursor) => decode_cursor(cursor)
            .and_then(|c| {
                c.rsplit_once(keys::TERM_SEPARATOR)
                    .map(|(t, d)| (t.to_string(), Some(d.to_string())))
            })
            .filter(|(t, _)| t.starts_with(term))
            .ok_or_else(|| ApiError::invalid_field("cursor", "not a cursor from this list"))?,
    };
    let upper = format!("{term}\u{10FFFF}");
    let mut items: Vec<CustomerRow> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut scanned = 0;
    // Rows read and rows that passed the filters, which size the next window of rows.
    let (mut fetched, mut passed) = (0_usize, 0_usize);
    // Only a page that goes on from a cursor can meet a customer an earlier page listed.
    let resumed = cursor.is_some();
    loop {
        let start = match &after.1 {
            None => "[$after_term]",
            Some(_) => "[$after_term, $after_doc]",
        };
        // The range is wrapped in a function call on purpose: SurrealDB 3.3 reads a literal
        // record range whole before applying LIMIT (18 ms for a common word at 300k
        // customers), while a range that a function returns is scanned with the limit pushed
        // down (1.3 ms).
        let terms: Vec<TermRow> = Query::new(format!(
            "SELECT record::id(id)[0] AS term, record::id(id)[1] AS doc FROM array::first([customer_term:{start}>..[$upper]]) LIMIT $chunk"
        ))
        .bind("after_term", after.0.clone())
        .bind("after_doc", after.1.clone())
        .bind("upper", upper.clone())
        .bind("chunk", TERM_CHUNK)
        .take(&state.db, 0)
        .await?;
        let exhausted = (terms.len() as i64) < TERM_CHUNK;
        scanned += terms.len();
        // The customers met here for the first time, in term order: a customer matches under
        // several terms (`zhangsan` and `zs` for `z`) and is listed only at the first of them.
        let candidates: Vec<(usize, &TermRow)> = terms
            .iter()
            .enumerate()
            .filter(|(_, t)| seen.insert(t.doc.clone()))
            .collect();
        // Rows are read a window at a time, sized to what the page still needs at the share
        // of rows the filters have let through so far, so a page of 50 reads about 50 rows
        // rather than the whole chunk's.
        let mut position = 0;
        while position < candidates.len() {
            let wanted = (limit - items.len()) as f64 / pass_rate(passed, fetched);
            let window = (wanted.ceil() as usize)
                .max(MIN_ROW_WINDOW)
                .min(candidates.len() - position);
            let slice = &candidates[position..position + window];
            position += window;
            let records: Vec<RecordId> = slice
                .iter()
                .map(|(_, t)| ids::record("customer", &t.doc))
                .collect();
            let rows: Vec<CustomerRow> = conditions
                .clone()
                .rebind(Query::new(format!(
                    "SELECT * OMIT terms, phone_keys, email_keys FROM $records WHERE {}",
                    conditions.sql()
                )))
                .bind("records", records)
                .take(&state.db, 0)
                .await?;
            fetched += slice.len();
            passed += rows.len();
            // A page that goes on from a cursor skips customers whose first matching term
            // lies before the cursor: an earlier page listed them there.
            let firsts = if resumed {
                first_terms(state, &rows, term).await?
            } else {
                std::collections::HashMap::new()
            };
            let mut by_doc: std::collections::HashMap<String, CustomerRow> =
                rows.into_iter().map(|r| (ids::key_of(&r.id), r)).collect();
            for (i, t) in slice {
                if firsts.get(&t.doc).is_some_and(|first| *first != t.term) {
                    continue;
                }
                if let Some(row) = by_doc.remove(&t.doc) {
                    items.push(row);
                    if items.len() == limit {
                        let more = !exhausted || i + 1 < terms.len();
                        return Ok(Page {
                            items,
                            next_cursor: more.then(|| t.cursor()),
                        });
                    }
                }
            }
        }
        match terms.last() {
            Some(last) if !exhausted => {
                if scanned >= MAX_TERMS_SCANNED {
                    return Ok(Page {
                        items,
                        next_cursor: Some(last.cursor()),
                    });
                }
                after = (last.term.clone(), Some(last.doc.clone()));
            }
            _ => {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }
}

/// The share of rows read so far that passed the filters, optimistic before the first read and
/// never so small that a window grows past what a chunk holds anyway.
fn pass_rate(passed: usize, fetched: usize) -> f64 {
    ((passed + 1) as f64 / (fetched + 1) as f64).max(1.0 / TERM_CHUNK as f64)
}

/// The first term under which each of `rows` matches `term`: the place an earlier page of the
/// same search listed it.
async fn first_terms(
    state: &AppState,
    rows: &[CustomerRow],
    term: &str,
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    #[derive(Debug, SurrealValue)]
    struct Terms {
        doc: String,
        terms: Vec<String>,
    }
    if rows.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    // The terms live in `customer_terms`; a row projected before migration 0010 and not
    // changed since still holds its own.
    let keys: Vec<String> = rows.iter().map(|r| ids::key_of(&r.id)).collect();
    let mut found: Vec<Terms> = Query::new("SELECT record::id(id) AS doc, terms FROM $records")
        .bind(
            "records",
            keys.iter()
                .map(|k| ids::record("customer_terms", k))
                .collect::<Vec<_>>(),
        )
        .take(&state.db, 0)
        .await?;
    let have: std::collections::HashSet<&str> = found.iter().map(|t| t.doc.as_str()).collect();
    let missing: Vec<RecordId> = rows
        .iter()
        .zip(&keys)
        .filter(|(_, key)| !have.contains(key.as_str()))
        .map(|(r, _)| r.id.clone())
        .collect();
    if !missing.is_empty() {
        let in_rows: Vec<Terms> =
            Query::new("SELECT record::id(id) AS doc, terms FROM $records WHERE terms != NONE")
                .bind("records", missing)
                .take(&state.db, 0)
                .await?;
        found.extend(in_rows);
    }
    Ok(found
        .into_iter()
        .filter_map(|t| {
            t.terms
                .into_iter()
                .filter(|candidate| candidate.starts_with(term))
                .min()
                .map(|first| (t.doc, first))
        })
        .collect())
}

fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// The customers the caller may see, filtered and searched.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", params(CustomerFilter),
    responses((status = 200, body = Page<Customer>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn list_customers(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<CustomerFilter>,
) -> Result<axum::Json<Page<Customer>>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    Ok(axum::Json(find(&state, &actor, &filter).await?))
}

/// The export's query: the list's filters plus the file format.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default) or `xlsx`.
    pub format: Option<FileFormat>,
    /// Search, as in the list.
    pub q: Option<String>,
    /// Phone, as in the list.
    pub phone: Option<String>,
    /// Email, as in the list.
    pub email: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Owner.
    pub owner_id: Option<String>,
    /// Level.
    pub level: Option<String>,
    /// `owned` or `pool`.
    pub state: Option<String>,
    /// Pool.
    pub pool_id: Option<String>,
    /// Last follow-up at or after this time, as in the list.
    pub follow_up_after: Option<DateTime<Utc>>,
    /// Last follow-up before this time, as in the list.
    pub follow_up_before: Option<DateTime<Utc>>,
}

/// The columns of an export (also accepted by import).
pub const EXPORT_COLUMNS: [&str; 14] = [
    "doc_id",
    "name",
    "kind",
    "level",
    "industry",
    "source",
    "phones",
    "emails",
    "address",
    "tags",
    "credit_code",
    "owner_id",
    "state",
    "created_at",
];

/// Most customers one export writes.
const MAX_EXPORT: usize = 100_000;

/// Exports the customers the caller may see (masked as the caller sees them) as CSV or XLSX.
/// Every export is audited with its filters and row count.
#[utoipa::path(get, path = "/api/v1/customers/export", tag = "customers", params(ExportQuery),
    responses((status = 200, description = "The file", content_type = "text/csv"), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn export_customers(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    actor.require(Permission::CustomerRead)?;
    actor.require(Permission::CustomerExport)?;
    let format = query.format.unwrap_or(FileFormat::Csv);
    let f = query;
    let mut filter = CustomerFilter {
        q: f.q.clone(),
        phone: f.phone.clone(),
        email: f.email.clone(),
        tag: f.tag.clone(),
        owner_id: f.owner_id.clone(),
        level: f.level.clone(),
        state: f.state.clone(),
        pool_id: f.pool_id.clone(),
        follow_up_after: f.follow_up_after,
        follow_up_before: f.follow_up_before,
        limit: Some(MAX_LIMIT),
        ..CustomerFilter::default()
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    loop {
        let page = find(&state, &actor, &filter).await?;
        for c in page.items {
            rows.push(vec![
                c.doc_id,
                c.name,
                c.kind,
                c.level.unwrap_or_default(),
                c.industry.unwrap_or_default(),
                c.source.unwrap_or_default(),
                c.phones.join("; "),
                c.emails.join("; "),
                c.address.unwrap_or_default(),
                c.tags.join("; "),
                c.credit_code.unwrap_or_default(),
                c.owner_id.unwrap_or_default(),
                c.state,
                c.created_at.to_rfc3339(),
            ]);
        }
        if rows.len() >= MAX_EXPORT {
            return Err(ApiError::invalid_field(
                "q",
                format!("the export would exceed {MAX_EXPORT} rows; narrow the filters"),
            ));
        }
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    let bytes = match format {
        FileFormat::Csv => files::write_csv(&EXPORT_COLUMNS, &rows),
        FileFormat::Xlsx => files::write_xlsx(&EXPORT_COLUMNS, &rows),
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    crate::platform::audit::record(
        &state.db,
        &actor.audit(),
        "customer.export",
        None,
        serde_json::json!({ "format": format, "rows": rows.len(), "filters": {
            "q": f.q, "phone": f.phone, "email": f.email, "tag": f.tag, "owner_id": f.owner_id,
            "level": f.level, "state": f.state, "pool_id": f.pool_id } }),
    )
    .await?;
    let filename = format!("customers.{}", format.extension());
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
