//! Automatic returns to the pool. A customer is due back when its owner made no follow-up for N
//! days (counted from the later of the claim and the last follow-up) or won no deal for M days
//! after the claim. The sweep waits the pool's grace period past a deadline, so a follow-up still
//! on a phone in a basement can arrive and count from when it was made.
//!
//! The sweep is a cron job: idempotent (each return re-checks, under the document's lock, that
//! the customer is still due and still with the same owner) and safe on several nodes (the cron
//! tick runs once; a second sweep finds nothing left to do). Owners are warned K days ahead.

use axum::extract::State;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use futures_util::StreamExt;
use outpost_mobile::api::Problem;
use outpost_mobile::records::customer::{Customer as Document, LEVELS};
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::{IntoParams, ToSchema};

use super::{LevelRules, Pool, PoolRow, find_pool};
use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::notifications::{Notification, notify};
use crate::error::ApiError;
use crate::platform::db::{Db, DbError, Query};
use crate::platform::http::ApiQuery;
use crate::platform::ids;
use crate::sync_host::SyncEngine;

/// The job queue of the sweep.
pub const QUEUE: &str = "pool.returns";
/// The default of `jobs.pool_sweep_schedule`: every ten minutes.
pub const SCHEDULE: &str = "0 */10 * * * *";
/// Customers returned concurrently (their commits share group transactions).
const PARALLEL_RETURNS: usize = 128;
/// Blocks read ahead of the returns, so the next block's documents are loaded while this
/// block's returns commit (the blocks ahead stay well within the engine's document cache).
const BLOCKS_AHEAD: usize = 2;
/// Customers re-read together just before they are returned.
const REREAD_BLOCK: usize = 256;

/// An owned pool customer as the sweep reads it.
#[derive(Debug, Clone, SurrealValue)]
struct Held {
    id: RecordId,
    name: String,
    owner: Option<String>,
    level: Option<String>,
    owned_since: Option<DateTime<Utc>>,
    last_follow_up_at: Option<DateTime<Utc>>,
    last_deal_at: Option<DateTime<Utc>>,
}

/// When and why a held customer is due back (without the grace period).
fn due(held: &Held, rules: &LevelRules) -> Option<(DateTime<Utc>, String)> {
    let since = held.owned_since?;
    let mut out: Option<(DateTime<Utc>, String)> = None;
    if let Some(days) = rules.return_without_follow_up_days {
        let base = held.last_follow_up_at.map_or(since, |f| f.max(since));
        let at = base + chrono::Duration::days(i64::from(days));
        out = Some((at, format!("no follow-up for {days} days")));
    }
    if let Some(days) = rules.return_without_deal_days
        && held.last_deal_at.is_none_or(|d| d < since)
    {
        let at = since + chrono::Duration::days(i64::from(days));
        if out.as_ref().is_none_or(|(t, _)| at < *t) {
            out = Some((at, format!("no deal within {days} days of the claim")));
        }
    }
    out
}

/// Every held customer of `pool` under the rules of `level` claimed at or before `cutoff` (a
/// superset of those due by then). Each level covered is one range of the `(state, pool,
/// level, owned_since)` index, so the sweep reads the candidates of this pool and level and
/// nothing else (with `(state, owned_since)` it read every held customer of every pool and
/// level, three times the candidates in the benchmark). Only the few fields the rules read are
/// loaded, so even a hundred thousand candidates stay small in memory.
async fn held_before(
    db: &Db,
    pool: &Pool,
    level: &str,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Held>, DbError> {
    let mut held = Vec::new();
    for level in covered_levels(pool, level) {
        let page: Vec<Held> = Query::new(
            "SELECT id, name, owner, level, owned_since, last_follow_up_at, last_deal_at FROM customer
               WITH INDEX customer_due
               WHERE state = 'owned' AND pool = $pool AND level = $level AND owned_since <= $cutoff",
        )
        .bind("pool", pool.id.clone())
        .bind("level", level)
        .bind("cutoff", cutoff)
        .take(db, 0)
        .await?;
        held.extend(page);
    }
    Ok(held)
}

/// The levels one rule set covers: its own, or for `*` every level without rules of its own,
/// and customers without a level (`None`).
fn covered_levels(pool: &Pool, level: &str) -> Vec<Option<String>> {
    if level == "*" {
        LEVELS
            .iter()
            .filter(|l| !pool.rules.contains_key(**l))
            .map(|l| Some((*l).to_string()))
            .chain([None])
            .collect()
    } else {
        vec![Some(level.to_string())]
    }
}

/// The earliest last-activity time that can still make a customer due by `moment` under
/// `rules` (grace included): anything held since before it may be due.
fn cutoff(
    rules: &LevelRules,
    grace: chrono::Duration,
    moment: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let days = [
        rules.return_without_follow_up_days,
        rules.return_without_deal_days,
    ]
    .into_iter()
    .flatten()
    .min()?;
    Some(moment - grace - chrono::Duration::days(i64::from(days)))
}

/// All pools.
async fn pools(db: &Db) -> Result<Vec<Pool>, DbError> {
    let rows: Vec<PoolRow> = Query::new("SELECT * FROM pool").take(db, 0).await?;
    Ok(rows.into_iter().map(Pool::from).collect())
}

/// What one sweep did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SweepReport {
    /// Customers returned to their pools.
    pub returned: usize,
    /// Owners warned of a coming return.
    pub warned: usize,
}

/// Returns every customer that is due (grace included) at `now`, and warns the owners of those
/// due within their warning window. Safe to run any number of times, on any node.
pub async fn sweep(
    engine: &SyncEngine,
    db: &Db,
    now: DateTime<Utc>,
) -> Result<SweepReport, DbError> {
    let mut report = SweepReport::default();
    for pool in pools(db).await? {
        for (level, rules) in &pool.rules {
            // Returns.
            if let Some(cut) = cutoff(rules, pool.grace(), now) {
                {
                    let page = held_before(db, &pool, level, cut).await?;
                    let due_now: Vec<(Held, String)> = page
                        .iter()
                        .filter_map(|h| {
                            due(h, rules)
                                .filter(|(at, _)| *at + pool.grace() <= now)
                                .map(|(_, why)| (h.clone(), why))
                        })
                        .collect();
                    // One pipeline: each block of candidates is re-read (a follow-up or a
                    // level change may have arrived since the sweep listed them) and its
                    // documents loaded in one round trip each, while the returns of the block
                    // before are still being committed.
                    let blocks: Vec<Vec<RecordId>> = due_now
                        .chunks(REREAD_BLOCK)
                        .map(|block| block.iter().map(|(h, _)| h.id.clone()).collect())
                        .collect();
                    let blocks = futures_util::stream::iter(blocks)
                        .map(|block| next_block(engine.clone(), db.clone(), block))
                        .buffered(BLOCKS_AHEAD)
                        .flat_map(futures_util::stream::iter);
                    let pool = &pool;
                    report.returned += blocks
                        .map(|held| return_one(engine, pool, held, now))
                        .buffer_unordered(PARALLEL_RETURNS)
                        .filter(|returned| std::future::ready(*returned))
                        .count()
                        .await;
                }
            }
            // Warnings.
            if let Some(warn) = rules.warn_days_before {
                let horizon = now + chrono::Duration::days(i64::from(warn));
                if let Some(cut) = cutoff(rules, chrono::Duration::zero(), horizon) {
                    {
                        let page = held_before(db, &pool, level, cut).await?;
                        for held in &page {
                            let Some((at, why)) = due(held, rules) else {
                                continue;
                            };
                            let (Some(owner), true) = (&held.owner, at > now && at <= horizon)
                            else {
                                continue;
                            };
                            let doc = ids::key_of(&held.id);
                            let sent = notify(
                                db,
                                &Notification {
                                    user: owner.clone(),
                                    kind: "pool.return_warning".into(),
                                    title: format!(
                                        "{} returns to pool {} on {}",
                                        held.name,
                                        pool.name,
                                        at.format("%Y-%m-%d")
                                    ),
                                    body: format!(
                                        "{} goes back to the public pool `{}` at {} ({why}) unless you follow up.",
                                        held.name,
                                        pool.name,
                                        at.to_rfc3339()
                                    ),
                                    subject: Some(("customer".into(), doc)),
                                    occasion: at.to_rfc3339(),
                                    urgent: false,
                                },
                            )
                            .await?;
                            report.warned += usize::from(sent);
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

/// The customers of `block` as they stand now, with their documents loaded: two round trips
/// for the whole block. A block that cannot be read is skipped (the next sweep retries it).
async fn next_block(engine: SyncEngine, db: Db, block: Vec<RecordId>) -> Vec<Held> {
    let fresh = match reread(&db, block.into_iter()).await {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::error!(error = %e, "cannot re-read customers to return");
            return Vec::new();
        }
    };
    let documents: Vec<outpost_sync::DocumentId> = fresh
        .iter()
        .filter_map(|h| outpost_sync::DocumentId::parse(&ids::key_of(&h.id)))
        .collect();
    if let Err(e) = engine.preload(&documents).await {
        tracing::warn!(error = %e, "cannot preload the customers to return; they load one by one");
    }
    fresh
}

/// The customers of `ids` as they stand now, in one query.
async fn reread(db: &Db, ids: impl Iterator<Item = RecordId>) -> Result<Vec<Held>, DbError> {
    Query::new(
        "SELECT id, name, owner, level, owned_since, last_follow_up_at, last_deal_at FROM $ids",
    )
    .bind("ids", ids.collect::<Vec<RecordId>>())
    .take(db, 0)
    .await
}

/// Returns one customer, freshly re-read, if it is still due and, under its lock, still with
/// the same owner, pool, claim and level.
async fn return_one(engine: &SyncEngine, pool: &Pool, held: Held, now: DateTime<Utc>) -> bool {
    let Some(id) = outpost_sync::DocumentId::parse(&ids::key_of(&held.id)) else {
        return false;
    };
    let Some((deadline, why)) = due(&held, &pool.rules_for(held.level.as_deref())) else {
        return false;
    };
    if deadline + pool.grace() > now {
        return false;
    }
    let author = outpost_sync::Author {
        identity: outpost_sync::PeerIdentity {
            user_id: "system".into(),
            device_id: None,
        },
        channel: "job",
        request_id: None,
        // Audited one entry per batch (`pool.return`); each customer's own trail is its
        // custody history.
        bulk: true,
    };
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut returned = false;
    let result = engine
        .update::<Document>(&author, &id, true, |doc| {
            // Decided again if another node changed the customer meanwhile.
            returned = false;
            let still_held = doc.server.state == "owned"
                && doc.server.owner == held.owner
                && doc.level == held.level
                && doc.custody.pool.as_deref() == Some(pool.id.as_str())
                && doc
                    .custody
                    .owned_since
                    .as_deref()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc))
                    == held.owned_since;
            if !still_held {
                return;
            }
            doc.custody.previous_owner = doc.server.owner.take();
            doc.server.state = "pool".into();
            doc.server.updated_by = None;
            doc.server.updated_at = Some(at.clone());
            doc.custody.released_at = Some(at.clone());
            doc.custody.owned_since = None;
            doc.custody.action = Some("return".into());
            doc.custody.reason = Some(why.clone());
            doc.custody.changed_by = None;
            doc.custody.changed_at = Some(at.clone());
            returned = true;
        })
        .await;
    match result {
        Ok(_) => returned,
        Err(e) => {
            tracing::error!(error = %e, customer = %id, "cannot return a customer to its pool");
            false
        }
    }
}

/// The query of the preview.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// The day (`YYYY-MM-DD`, in the caller's time zone); today when absent.
    pub date: Option<NaiveDate>,
}

/// One customer the preview expects back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ComingReturn {
    /// The customer's document id.
    pub doc_id: String,
    /// Its name.
    pub name: String,
    /// Its owner now.
    pub owner_id: Option<String>,
    /// Its level.
    pub level: Option<String>,
    /// When the sweep returns it (deadline plus grace).
    pub returns_at: DateTime<Utc>,
    /// The deadline itself.
    pub deadline: DateTime<Utc>,
    /// Which rule.
    pub reason: String,
}

/// What will return to the pool on a day, and why, as things stand (a follow-up before then
/// changes it). Today's list includes what is overdue and goes at the next sweep.
#[utoipa::path(get, path = "/api/v1/pools/{id}/returns/preview", tag = "pool", params(("id" = String, Path, description = "Pool id"), PreviewQuery),
    responses((status = 200, body = Vec<ComingReturn>), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn preview(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiQuery(query): ApiQuery<PreviewQuery>,
) -> Result<axum::Json<Vec<ComingReturn>>, ApiError> {
    let pool = match find_pool(&state, &id).await? {
        Some(pool) if pool.may_configure(&actor) || pool.may_claim(&state, &actor).await? => pool,
        _ => return Err(ApiError::NotFound("pool")),
    };
    let tz: chrono_tz::Tz = actor
        .user
        .time_zone
        .parse()
        .unwrap_or(chrono_tz::Asia::Shanghai);
    let now = state.clock.now();
    let day = query
        .date
        .unwrap_or_else(|| now.with_timezone(&tz).date_naive());
    let local = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    };
    let (Some(start), Some(end)) = (local(day), day.succ_opt().and_then(local)) else {
        return Err(ApiError::invalid_field(
            "date",
            "is not a day in your time zone",
        ));
    };
    let today = now.with_timezone(&tz).date_naive() == day;
    let mut out = Vec::new();
    for (level, rules) in &pool.rules {
        let Some(cut) = cutoff(rules, pool.grace(), end) else {
            continue;
        };
        {
            let page = held_before(&state.db, &pool, level, cut).await?;
            for held in &page {
                let Some((deadline, reason)) = due(held, rules) else {
                    continue;
                };
                let returns_at = deadline + pool.grace();
                if returns_at < end && (returns_at >= start || today) {
                    out.push(ComingReturn {
                        doc_id: ids::key_of(&held.id),
                        name: held.name.clone(),
                        owner_id: held.owner.clone(),
                        level: held.level.clone(),
                        returns_at,
                        deadline,
                        reason,
                    });
                }
            }
        }
    }
    // Members see what they could claim; names of customers outside the caller's scope stay,
    // since the pool shows them soon anyway, but owners outside the scope are not named.
    for item in &mut out {
        if item
            .owner_id
            .as_ref()
            .is_some_and(|o| !actor.scope.contains(o))
        {
            item.owner_id = None;
        }
    }
    out.sort_by_key(|a| a.returns_at);
    Ok(axum::Json(out))
}

/// Runs the return sweep now (what the cron job does every ten minutes), for admins who just
/// changed a rule. A long sweep outlives the request's timeout and finishes on its own.
#[utoipa::path(post, path = "/api/v1/pools/sweep", tag = "pool",
    responses((status = 200, body = SweepReport), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn sweep_now(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<SweepReport>, ApiError> {
    actor.require(Permission::PoolConfigure)?;
    // The sweep runs in its own task: a request that times out leaves it to finish.
    let (engine, db, now) = (state.sync.clone(), state.db.clone(), state.clock.now());
    let report = tokio::spawn(async move { sweep(&engine, &db, now).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(axum::Json(report))
}

/// The customers `user` holds that return within their pool's warning window: a section of the
/// morning digest.
pub async fn returning_soon(
    db: &Db,
    user: &str,
    now: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, String)>, DbError> {
    let mut out = Vec::new();
    for pool in pools(db).await? {
        for (level, rules) in &pool.rules {
            let Some(warn) = rules.warn_days_before else {
                continue;
            };
            let horizon = now + chrono::Duration::days(i64::from(warn));
            let Some(cut) = cutoff(rules, chrono::Duration::zero(), horizon) else {
                continue;
            };
            let held: Vec<Held> = Query::new(
                "SELECT id, name, owner, level, owned_since, last_follow_up_at, last_deal_at FROM customer
                   WITH INDEX customer_holder_list_key
                   WHERE holder = $holder AND pool = $pool AND owned_since <= $cutoff AND level INSIDE $levels",
            )
            .bind("holder", crate::crm::customers::owner_holder(user))
            .bind("pool", pool.id.clone())
            .bind("cutoff", cut)
            .bind("levels", covered_levels(&pool, level))
            .take(db, 0)
            .await?;
            for h in held {
                if let Some((at, _)) = due(&h, rules)
                    && at <= horizon
                {
                    out.push((
                        at + pool.grace(),
                        format!("{} (pool {})", h.name, pool.name),
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
