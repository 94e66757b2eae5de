//! The ownership commands: claim, assign, release, transfer. Each is a `POST` (send an
//! `Idempotency-Key`; a phone queues them in its outbox while offline) that the server decides
//! under the customer document's lock, so of many concurrent claims exactly one wins and the
//! others get 409 with the winner. The result lands in the document's server-owned fields, and
//! the same commit writes the projection, the history entry and the audit entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use outpost_mobile::api::Problem;
use outpost_mobile::records::customer::Customer as Document;
use outpost_sync::DocumentId;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Pool, find_pool};
use crate::app::AppState;
use crate::crm::customers::{Customer, CustomerRow};
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::{author, change_error, parse_doc_id};
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::http::ApiJson;

/// One async lock per rep: a rep's claims and assignments to them run one at a time, so the
/// owned cap and the daily claim limit they check cannot be overrun by parallel requests.
#[derive(Clone, Default)]
pub struct RepLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl RepLocks {
    /// Holds `user`'s lock until the guard drops.
    pub async fn lock(&self, user: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > 10_000 {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(user.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// The customer projection, whatever its state (commands act on pool customers too).
async fn load(state: &AppState, id: &DocumentId) -> Result<Customer, ApiError> {
    let row: Option<CustomerRow> = state.db.get("customer", id.as_str()).await?;
    match row.map(Customer::from) {
        Some(c) if c.state != "deleted" => Ok(c),
        _ => Err(ApiError::NotFound("customer")),
    }
}

/// The pool a customer belongs to; a customer without one cannot go to a pool.
async fn pool_of(state: &AppState, customer: &Customer) -> Result<Pool, ApiError> {
    match &customer.pool_id {
        Some(pool) => find_pool(state, pool)
            .await?
            .ok_or_else(|| ApiError::Conflict("the customer's pool no longer exists".into())),
        None => Err(ApiError::Conflict(
            "the customer belongs to no pool; set one first".into(),
        )),
    }
}

/// Checks the owned cap of `user` in `pool` for a customer of `level`.
async fn check_owned_cap(
    state: &AppState,
    pool: &Pool,
    level: Option<&str>,
    user: &str,
) -> Result<(), ApiError> {
    let Some(cap) = pool.rules_for(level).max_owned else {
        return Ok(());
    };
    let owned: Option<i64> = Query::new(
        "(SELECT count() AS n FROM customer WITH INDEX customer_holder_list_key WHERE holder = $holder AND pool = $pool GROUP ALL)[0].n",
    )
    .bind("holder", crate::crm::customers::owner_holder(user))
    .bind("pool", pool.id.clone())
    .take(&state.db, 0)
    .await?;
    if owned.unwrap_or(0) >= i64::from(cap) {
        return Err(ApiError::PoolRule(format!(
            "the owner would hold more than {cap} customers of pool `{}`",
            pool.name
        )));
    }
    Ok(())
}

/// The start of `user`'s local day containing `now`.
async fn local_day_start(
    state: &AppState,
    user: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    let tz: Option<String> =
        Query::new("(SELECT VALUE time_zone FROM ONLY type::record('user', $user))")
            .bind("user", user.to_string())
            .take(&state.db, 0)
            .await?;
    let tz: chrono_tz::Tz = tz
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::Asia::Shanghai);
    let day = now.with_timezone(&tz).date_naive();
    Ok(tz
        .from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .map_or(now, |t| t.with_timezone(&Utc)))
}

/// Runs a change of hands under the document's lock: `decide` sees the current document and
/// either changes it or refuses. `None` from `decide` means nothing to do (already so).
async fn change_hands(
    state: &AppState,
    actor: &Actor,
    id: &DocumentId,
    mut decide: impl FnMut(&mut Document) -> Result<(), ApiError>,
) -> Result<Customer, ApiError> {
    let mut outcome: Result<(), ApiError> = Ok(());
    state
        .sync
        .update::<Document>(&author(actor), id, true, |doc| {
            // The decision is made again if another node changed the customer meanwhile.
            outcome = Ok(());
            if doc.server.state == "deleted" {
                outcome = Err(ApiError::NotFound("customer"));
                return;
            }
            let before = doc.clone();
            if let Err(e) = decide(doc) {
                *doc = before;
                outcome = Err(e);
            }
        })
        .await
        .map_err(|e| change_error("customer", e))?;
    outcome?;
    Ok(load(state, id).await?.for_actor(actor))
}

/// Stamps a change of hands onto `doc`.
fn hand_over(
    doc: &mut Document,
    to: Option<&str>,
    action: &str,
    by: Option<&str>,
    reason: Option<String>,
    now: DateTime<Utc>,
) {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let previous = doc.server.owner.clone();
    doc.server.owner = to.map(str::to_string);
    doc.server.state = if to.is_some() { "owned" } else { "pool" }.into();
    doc.server.updated_by = by.map(str::to_string);
    doc.server.updated_at = Some(at.clone());
    if to.is_some() {
        doc.custody.owned_since = Some(at.clone());
    } else {
        doc.custody.previous_owner = previous;
        doc.custody.released_at = Some(at.clone());
        doc.custody.owned_since = None;
    }
    doc.custody.action = Some(action.to_string());
    doc.custody.reason = reason;
    doc.custody.changed_by = by.map(str::to_string);
    doc.custody.changed_at = Some(at);
}

/// Whether `doc`'s previous owner `user` is still cooling down.
fn cooling_down(doc: &Document, pool: &Pool, user: &str, now: DateTime<Utc>) -> Option<String> {
    let days = pool.rules_for(doc.level.as_deref()).cooldown_days?;
    if doc.custody.previous_owner.as_deref() != Some(user) {
        return None;
    }
    let released = doc
        .custody
        .released_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    let until = released + chrono::Duration::days(i64::from(days));
    (now < until).then(|| {
        format!(
            "you held this customer until {}; you may claim it back from {}",
            released.to_rfc3339(),
            until.to_rfc3339()
        )
    })
}

/// Claims a customer from its pool for the caller: the caller must be a member of the pool,
/// under the owned cap and the daily claim limit, and not cooling down from having held it.
/// Claiming one's own customer again is a no-op; a customer someone else owns is a 409 naming
/// the owner.
#[utoipa::path(post, path = "/api/v1/customers/{doc_id}/claim", tag = "pool",
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem, description = "Owned by someone else (`owner_id`), or refused by a pool rule")),
    security(("bearer" = [])))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    let customer = load(&state, &id).await?;
    let pool = match &customer.pool_id {
        Some(_) => pool_of(&state, &customer).await?,
        None => return Err(ApiError::NotFound("customer")),
    };
    if !pool.may_claim(&state, &actor).await? {
        // A non-member learns nothing about the customer.
        return Err(ApiError::NotFound("customer"));
    }
    let _rep = state.rep_locks.lock(&actor.user_id).await;
    let now = state.clock.now();
    let rules = pool.rules_for(customer.level.as_deref());
    if customer.owner_id.as_deref() != Some(actor.user_id.as_str()) && customer.state == "pool" {
        check_owned_cap(&state, &pool, customer.level.as_deref(), &actor.user_id).await?;
        if let Some(limit) = rules.max_claims_per_day {
            let since = local_day_start(&state, &actor.user_id, now).await?;
            let claims = crate::crm::customers::history::claims_since(
                &state.db,
                &actor.user_id,
                &pool.id,
                since,
            )
            .await?;
            if claims >= i64::from(limit) {
                return Err(ApiError::PoolRule(format!(
                    "you have made {limit} claims from pool `{}` today, the most allowed",
                    pool.name
                )));
            }
        }
    }
    let me = actor.user_id.clone();
    let result = change_hands(&state, &actor, &id, |doc| {
        match doc.server.owner.as_deref() {
            Some(owner) if owner == me => return Ok(()),
            Some(owner) => {
                return Err(ApiError::AlreadyOwned {
                    message: "someone else claimed this customer first".into(),
                    owner_id: Some(owner.to_string()),
                });
            }
            None => {}
        }
        if doc.custody.pool.as_deref() != Some(pool.id.as_str()) {
            return Err(ApiError::Conflict(
                "the customer moved to another pool".into(),
            ));
        }
        if let Some(why) = cooling_down(doc, &pool, &me, now) {
            return Err(ApiError::PoolRule(why));
        }
        hand_over(doc, Some(&me), "claim", Some(&me), None, now);
        Ok(())
    })
    .await?;
    Ok(axum::Json(result))
}

/// `POST /api/v1/customers/{doc_id}/assign` and `.../transfer`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandOver {
    /// The rep who gets the customer.
    pub user_id: String,
    /// Why (kept in the history).
    pub reason: Option<String>,
}

/// `POST /api/v1/customers/{doc_id}/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Why the customer goes back (required, kept in the history).
    pub reason: String,
}

fn check_reason(reason: Option<&str>, required: bool) -> Result<Option<String>, ApiError> {
    match reason.map(str::trim) {
        Some(r) if r.chars().count() > 500 => Err(ApiError::invalid_field(
            "reason",
            "must be at most 500 characters",
        )),
        Some(r) if !r.is_empty() => Ok(Some(r.to_string())),
        _ if required => Err(ApiError::invalid_field("reason", "must not be empty")),
        _ => Ok(None),
    }
}

/// A rep the caller may hand customers to: active, and within the caller's scope.
async fn check_target(state: &AppState, actor: &Actor, user: &str) -> Result<(), ApiError> {
    let active = crate::crm::identity::users::is_active(state, user).await?;
    if !active || !actor.scope.contains(user) {
        return Err(ApiError::invalid_field(
            "user_id",
            "no such active user in your scope",
        ));
    }
    Ok(())
}

/// A manager gives a customer to a rep: a pool customer of a pool the manager configures or
/// belongs to, or an owned customer within the manager's scope. The rep's owned cap applies.
#[utoipa::path(post, path = "/api/v1/customers/{doc_id}/assign", tag = "pool", request_body = HandOver,
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn assign(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<HandOver>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerAssign)?;
    let id = parse_doc_id(&doc_id)?;
    let reason = check_reason(body.reason.as_deref(), false)?;
    let customer = load(&state, &id).await?;
    match (&customer.owner_id, &customer.pool_id) {
        (Some(owner), _) if actor.scope.contains(owner) => {}
        (None, Some(_)) => {
            let pool = pool_of(&state, &customer).await?;
            if !pool.may_configure(&actor) && !pool.may_claim(&state, &actor).await? {
                return Err(ApiError::NotFound("customer"));
            }
        }
        _ => return Err(ApiError::NotFound("customer")),
    }
    let expected_owner = customer.owner_id.clone();
    let result = give(
        &state,
        &actor,
        &id,
        &customer,
        expected_owner,
        &body.user_id,
        "assign",
        reason,
    )
    .await?;
    Ok(axum::Json(result))
}

/// Gives `customer` to `to` if it is still with `expected_owner`: the target must be an
/// active user in the actor's scope, under the pool's owned cap. Giving it to its owner is a
/// no-op.
#[allow(clippy::too_many_arguments)]
async fn give(
    state: &AppState,
    actor: &Actor,
    id: &DocumentId,
    customer: &Customer,
    expected_owner: Option<String>,
    to: &str,
    action: &str,
    reason: Option<String>,
) -> Result<Customer, ApiError> {
    check_target(state, actor, to).await?;
    let _rep = state.rep_locks.lock(to).await;
    if let Some(pool_id) = &customer.pool_id
        && let Some(pool) = find_pool(state, pool_id).await?
        && customer.owner_id.as_deref() != Some(to)
    {
        check_owned_cap(state, &pool, customer.level.as_deref(), to).await?;
    }
    let (me, now) = (actor.user_id.clone(), state.clock.now());
    change_hands(state, actor, id, |doc| {
        if doc.server.owner.as_deref() == Some(to) {
            return Ok(());
        }
        if doc.server.owner != expected_owner {
            return Err(ApiError::AlreadyOwned {
                message: "the customer changed hands meanwhile; look again".into(),
                owner_id: doc.server.owner.clone(),
            });
        }
        hand_over(doc, Some(to), action, Some(&me), reason.clone(), now);
        Ok(())
    })
    .await
}

/// Moves an owned customer from one rep to another (both within the caller's scope).
#[utoipa::path(post, path = "/api/v1/customers/{doc_id}/transfer", tag = "pool", request_body = HandOver,
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn transfer(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<HandOver>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerAssign)?;
    let id = parse_doc_id(&doc_id)?;
    let reason = check_reason(body.reason.as_deref(), false)?;
    let customer = load(&state, &id).await?;
    let Some(owner) = customer
        .owner_id
        .clone()
        .filter(|o| actor.scope.contains(o))
    else {
        return Err(ApiError::NotFound("customer"));
    };
    let result = give(
        &state,
        &actor,
        &id,
        &customer,
        Some(owner),
        &body.user_id,
        "transfer",
        reason,
    )
    .await?;
    Ok(axum::Json(result))
}

/// The owner (or a manager over them) returns a customer to its pool, with a reason.
#[utoipa::path(post, path = "/api/v1/customers/{doc_id}/release", tag = "pool", request_body = Release,
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn release(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<Release>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    let reason = check_reason(Some(&body.reason), true)?;
    let customer = load(&state, &id).await?;
    let Some(owner) = customer.owner_id.clone().filter(|o| {
        o == &actor.user_id || actor.can(Permission::CustomerAssign) && actor.scope.contains(o)
    }) else {
        if customer.state == "pool" {
            return Err(ApiError::Conflict(
                "the customer is in the pool already".into(),
            ));
        }
        return Err(ApiError::NotFound("customer"));
    };
    pool_of(&state, &customer).await?;
    let (me, now) = (actor.user_id.clone(), state.clock.now());
    let result = change_hands(&state, &actor, &id, |doc| {
        if doc.server.owner.as_deref() != Some(owner.as_str()) {
            return Err(ApiError::AlreadyOwned {
                message: "the customer changed hands meanwhile; look again".into(),
                owner_id: doc.server.owner.clone(),
            });
        }
        hand_over(doc, None, "release", Some(&me), reason.clone(), now);
        Ok(())
    })
    .await?;
    Ok(axum::Json(result))
}
