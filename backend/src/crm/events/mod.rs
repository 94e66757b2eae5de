//! Calendar events (日程), each a synced document, and calendar sharing.
//!
//! Who sees an event: everyone whose data scope holds its organizer (a manager sees the
//! subordinates' calendars), its attendees, and the colleagues the organizer shares their
//! calendar with. Only the organizer's scope changes it; an attendee answers with
//! `POST .../accept` or `.../decline`. A `private` event shows as busy time to everyone but the
//! organizer and the attendees.

pub mod reminders;

use autosurgeon::Text;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use outpost_mobile::records::event::{Attendee, Event as Document};
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::{author, change_error, double_option, parse_doc_id};
use crate::error::ApiError;
use crate::platform::db::{Query, Tx};
use crate::platform::http::{ApiJson, ApiQuery, Order, PageParams, fetch_page};
use crate::platform::ids;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events, create_event))
        .routes(routes!(get_event, update_event, delete_event))
        .routes(routes!(accept_event))
        .routes(routes!(decline_event))
        .routes(routes!(list_shares, share_calendar))
        .routes(routes!(unshare_calendar))
}

/// An attendee as stored in the projection.
#[derive(Debug, Clone, SurrealValue, Serialize, Deserialize, ToSchema)]
pub struct AttendeeView {
    /// The user's id.
    pub user: String,
    /// `invited`, `accepted` or `declined`.
    pub response: String,
}

/// An event projection row.
#[derive(Debug, Clone, SurrealValue)]
pub struct EventRow {
    id: RecordId,
    title: String,
    notes: String,
    starts_at: String,
    ends_at: String,
    all_day: bool,
    location: Option<String>,
    customer: Option<String>,
    attendees: Vec<AttendeeView>,
    attendee_ids: Vec<String>,
    visibility: String,
    reminders: Vec<i64>,
    owner: Option<String>,
    state: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// An event as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// The automerge-repo document id.
    pub doc_id: String,
    /// What it is (`Busy` for a private event of someone else's).
    pub title: String,
    /// Details.
    pub notes: String,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// End, RFC 3339.
    pub ends_at: String,
    /// A whole-day event.
    pub all_day: bool,
    /// Where.
    pub location: Option<String>,
    /// The customer's document id.
    pub customer_doc_id: Option<String>,
    /// Invited colleagues and their answers.
    pub attendees: Vec<AttendeeView>,
    /// `default` or `private`.
    pub visibility: String,
    /// Reminders, minutes before the start.
    pub reminders: Vec<i64>,
    /// The organizer.
    pub owner_id: Option<String>,
    /// Whether the caller may change it (the organizer's scope).
    pub editable: bool,
    /// Created on the server.
    pub created_at: DateTime<Utc>,
    /// Last changed on the server.
    pub updated_at: DateTime<Utc>,
}

impl EventView {
    /// The event as `actor` sees it (with the caller's own response).
    pub fn of(row: EventRow, actor: &Actor) -> Self {
        let involved = row.owner.as_deref() == Some(actor.user_id.as_str())
            || row.attendee_ids.contains(&actor.user_id);
        let editable = row
            .owner
            .as_deref()
            .is_some_and(|o| actor.scope.contains(o))
            && actor.permissions.contains(&Permission::CustomerWrite);
        let masked = row.visibility == "private" && !involved;
        Self {
            doc_id: ids::key_of(&row.id),
            title: if masked { "Busy".into() } else { row.title },
            notes: if masked { String::new() } else { row.notes },
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            all_day: row.all_day,
            location: if masked { None } else { row.location },
            customer_doc_id: if masked { None } else { row.customer },
            attendees: if masked { Vec::new() } else { row.attendees },
            visibility: row.visibility,
            reminders: row.reminders,
            owner_id: row.owner,
            editable,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The SurrealQL condition of "events `$me` may see", given the condition of the user's data
/// scope on `owner`: the one definition the REST lists and the sync manifest share (the access
/// gate applies the same rule to one document).
pub fn visible_sql(scope_condition: &str) -> String {
    format!(
        "state != 'deleted' AND ({scope_condition} OR $me IN attendee_ids OR owner IN (SELECT VALUE owner FROM calendar_share WHERE with = $me))"
    )
}

/// [`visible_sql`] for `actor`, with its bindings.
pub fn visible_condition(actor: &Actor) -> Query {
    let scope = actor.scope.filter("owner");
    Query::new(visible_sql(&scope.condition))
        .bind("scope_owners", scope.owners)
        .bind("me", actor.user_id.clone())
}

/// One event the actor may see, or the same 404 as a missing one.
async fn visible_event(state: &AppState, actor: &Actor, key: &str) -> Result<EventRow, ApiError> {
    let condition = visible_condition(actor);
    let query = Query::new(format!(
        "SELECT * FROM ONLY $record WHERE {}",
        condition.sql()
    ))
    .bind("record", ids::record("event", key));
    let row: Option<EventRow> = condition.rebind(query).take(&state.db, 0).await?;
    row.ok_or(ApiError::NotFound("event"))
}

/// Filters of the event list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Events ending at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Events starting before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Only this organizer's calendar (a user id).
    pub owner_id: Option<String>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The events the caller may see (their own, their team's, those they are invited to, and
/// shared calendars), optionally within a time range.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventFilter),
    responses((status = 200, body = Page<EventView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_events(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<EventFilter>,
) -> Result<axum::Json<Page<EventView>>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .validate_any()?;
    let visible = visible_condition(&actor);
    let condition = visible
        .and_when("ends >= $from", "from", filter.from)
        .and_when("starts < $to", "to", filter.to)
        .and_when("owner = $owner", "owner", filter.owner_id);
    let page = fetch_page::<EventRow, EventRow>(
        &state.db,
        "event",
        condition,
        &page,
        Order::OldestFirst,
        |e| ids::key_of(&e.id),
    )
    .await?;
    Ok(axum::Json(Page {
        items: page
            .items
            .into_iter()
            .map(|row| EventView::of(row, &actor))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One event.
#[utoipa::path(get, path = "/api/v1/events/{doc_id}", tag = "events",
    params(("doc_id" = String, Path, description = "The event's document id")),
    responses((status = 200, body = EventView), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_event(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<EventView>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let id = parse_doc_id(&doc_id)?;
    let row = visible_event(&state, &actor, id.as_str()).await?;
    Ok(axum::Json(EventView::of(row, &actor)))
}

/// `POST /api/v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    /// What it is.
    pub title: String,
    /// Details.
    #[serde(default)]
    pub notes: String,
    /// Start, RFC 3339.
    pub starts_at: String,
    /// End, RFC 3339.
    pub ends_at: String,
    /// A whole-day event.
    #[serde(default)]
    pub all_day: bool,
    /// Where.
    pub location: Option<String>,
    /// The customer's document id.
    pub customer_doc_id: Option<String>,
    /// Colleagues to invite (user ids).
    #[serde(default)]
    pub attendee_ids: Vec<String>,
    /// `default` or `private`.
    pub visibility: Option<String>,
    /// Reminders, minutes before the start.
    #[serde(default)]
    pub reminders: Vec<i64>,
}

/// Invitees must be active users.
async fn check_attendees(state: &AppState, attendees: &[String]) -> Result<(), ApiError> {
    for (i, user) in attendees.iter().enumerate() {
        if !crate::crm::identity::users::is_active(state, user).await? {
            return Err(ApiError::invalid_field(
                &format!("attendee_ids[{i}]"),
                "is not an active user",
            ));
        }
    }
    Ok(())
}

/// Create an event in the caller's calendar and invite colleagues.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = CreateEvent,
    responses((status = 201, body = EventView), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_event(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateEvent>,
) -> Result<(StatusCode, axum::Json<EventView>), ApiError> {
    actor.require(Permission::CustomerWrite)?;
    if let Some(customer) = &body.customer_doc_id {
        crate::crm::customers::customer_reference(&state, &actor, customer).await?;
    }
    check_attendees(&state, &body.attendee_ids).await?;
    let mut record = Document::new(body.title, body.starts_at, body.ends_at);
    record.notes = Text::with_value(body.notes);
    record.all_day = body.all_day;
    record.location = body.location;
    record.customer = body.customer_doc_id;
    record.attendees = body
        .attendee_ids
        .into_iter()
        .map(Attendee::invited)
        .collect();
    if let Some(visibility) = body.visibility {
        record.visibility = visibility;
    }
    record.reminders = body.reminders;
    let (id, _) = state
        .sync
        .create(&author(&actor), record)
        .await
        .map_err(|e| change_error("event", e))?;
    let row = visible_event(&state, &actor, id.as_str()).await?;
    Ok((StatusCode::CREATED, axum::Json(EventView::of(row, &actor))))
}

/// `PATCH /api/v1/events/{doc_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEvent {
    /// New title.
    pub title: Option<String>,
    /// New notes.
    pub notes: Option<String>,
    /// New start.
    pub starts_at: Option<String>,
    /// New end.
    pub ends_at: Option<String>,
    /// Whole day or not.
    pub all_day: Option<bool>,
    /// New place, or `null`.
    #[serde(default, deserialize_with = "double_option")]
    pub location: Option<Option<String>>,
    /// The invitees (replaces the list; answers of those who stay are kept).
    pub attendee_ids: Option<Vec<String>>,
    /// `default` or `private`.
    pub visibility: Option<String>,
    /// New reminders.
    pub reminders: Option<Vec<i64>>,
}

/// Change an event (the organizer's scope only).
#[utoipa::path(patch, path = "/api/v1/events/{doc_id}", tag = "events", request_body = UpdateEvent,
    params(("doc_id" = String, Path, description = "The event's document id")),
    responses((status = 200, body = EventView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_event(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<UpdateEvent>,
) -> Result<axum::Json<EventView>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    let row = visible_event(&state, &actor, id.as_str()).await?;
    if !EventView::of(row, &actor).editable {
        return Err(ApiError::NotAllowed(
            "only the organizer's side changes an event; attendees answer it".into(),
        ));
    }
    if let Some(attendees) = &body.attendee_ids {
        check_attendees(&state, attendees).await?;
    }
    state
        .sync
        .update::<Document>(&author(&actor), &id, false, |e| {
            if let Some(v) = body.title.clone() {
                e.title = v;
            }
            if let Some(v) = body.notes.clone() {
                outpost_mobile::records::set_text(&mut e.notes, &v);
            }
            if let Some(v) = body.starts_at.clone() {
                e.starts_at = v;
            }
            if let Some(v) = body.ends_at.clone() {
                e.ends_at = v;
            }
            if let Some(v) = body.all_day {
                e.all_day = v;
            }
            if let Some(v) = body.location.clone() {
                e.location = v;
            }
            if let Some(ids) = body.attendee_ids.clone() {
                e.attendees = ids
                    .into_iter()
                    .map(|user| {
                        e.attendees
                            .iter()
                            .find(|a| a.user == user)
                            .cloned()
                            .unwrap_or_else(|| Attendee::invited(user))
                    })
                    .collect();
            }
            if let Some(v) = body.visibility.clone() {
                e.visibility = v;
            }
            if let Some(v) = body.reminders.clone() {
                e.reminders = v;
            }
        })
        .await
        .map_err(|e| change_error("event", e))?;
    let row = visible_event(&state, &actor, id.as_str()).await?;
    Ok(axum::Json(EventView::of(row, &actor)))
}

/// Delete an event (a tombstone every device syncs).
#[utoipa::path(delete, path = "/api/v1/events/{doc_id}", tag = "events",
    params(("doc_id" = String, Path, description = "The event's document id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn delete_event(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    let row = visible_event(&state, &actor, id.as_str()).await?;
    if !EventView::of(row, &actor).editable {
        return Err(ApiError::NotAllowed(
            "only the organizer's side deletes an event".into(),
        ));
    }
    let user = actor.user_id.clone();
    state
        .sync
        .update::<Document>(&author(&actor), &id, true, |e| {
            e.server.state = "deleted".into();
            e.server.updated_by = Some(user.clone());
            e.server.updated_at = Some(outpost_mobile::records::timestamp_now());
        })
        .await
        .map_err(|e| change_error("event", e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// An invitee's answer, through the sync engine like any change.
async fn answer(
    state: &AppState,
    actor: &Actor,
    doc_id: &str,
    response: &str,
) -> Result<EventView, ApiError> {
    let id = parse_doc_id(doc_id)?;
    let row = visible_event(state, actor, id.as_str()).await?;
    if !row.attendee_ids.contains(&actor.user_id) {
        return Err(ApiError::NotAllowed(
            "you are not invited to this event".into(),
        ));
    }
    let me = actor.user_id.clone();
    state
        .sync
        .update::<Document>(&author(actor), &id, false, |e| {
            for attendee in &mut e.attendees {
                if attendee.user == me {
                    attendee.response = response.to_string();
                }
            }
        })
        .await
        .map_err(|e| change_error("event", e))?;
    let row = visible_event(state, actor, id.as_str()).await?;
    Ok(EventView::of(row, actor))
}

/// Accept an invitation (again is fine).
#[utoipa::path(post, path = "/api/v1/events/{doc_id}/accept", tag = "events",
    params(("doc_id" = String, Path, description = "The event's document id")),
    responses((status = 200, body = EventView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn accept_event(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<EventView>, ApiError> {
    answer(&state, &actor, &doc_id, "accepted")
        .await
        .map(axum::Json)
}

/// Decline an invitation (again is fine).
#[utoipa::path(post, path = "/api/v1/events/{doc_id}/decline", tag = "events",
    params(("doc_id" = String, Path, description = "The event's document id")),
    responses((status = 200, body = EventView), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn decline_event(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<EventView>, ApiError> {
    answer(&state, &actor, &doc_id, "declined")
        .await
        .map(axum::Json)
}

/// A calendar share.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, SurrealValue)]
pub struct Share {
    /// Whose calendar.
    pub owner: String,
    /// Who sees it.
    pub with: String,
}

/// `POST /api/v1/calendar/shares`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    /// The colleague who may see the caller's calendar.
    pub with_user_id: String,
}

/// Who the caller shares their calendar with, and whose calendars are shared with the caller.
#[utoipa::path(get, path = "/api/v1/calendar/shares", tag = "events",
    responses((status = 200, body = Vec<Share>), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn list_shares(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<Vec<Share>>, ApiError> {
    let shares: Vec<Share> = Query::new(
        "SELECT owner, with FROM calendar_share WHERE owner = $me OR with = $me ORDER BY owner, with",
    )
    .bind("me", actor.user_id.clone())
    .take(&state.db, 0)
    .await?;
    Ok(axum::Json(shares))
}

/// Share the caller's calendar with a colleague (again is fine).
#[utoipa::path(post, path = "/api/v1/calendar/shares", tag = "events", request_body = ShareBody,
    responses((status = 200, body = Share), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn share_calendar(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<ShareBody>,
) -> Result<axum::Json<Share>, ApiError> {
    check_attendees(&state, std::slice::from_ref(&body.with_user_id))
        .await
        .map_err(|_| ApiError::invalid_field("with_user_id", "is not an active user"))?;
    if body.with_user_id == actor.user_id {
        return Err(ApiError::invalid_field(
            "with_user_id",
            "is you; your calendar is yours already",
        ));
    }
    let mut tx = Tx::new();
    let key = format!("{}:{}", actor.user_id, body.with_user_id);
    let record = tx.bind(ids::record("calendar_share", &key));
    let owner = tx.bind(actor.user_id.clone());
    let with = tx.bind(body.with_user_id.clone());
    tx.push(format!(
        "UPSERT {record} SET owner = {owner}, with = {with}, created_at = created_at ?? time::now()"
    ));
    tx.audit(
        &actor.audit(),
        "calendar.share",
        Some(("user", &body.with_user_id)),
        serde_json::json!({}),
    );
    tx.run(&state.db).await?;
    crate::sync_host::scopes_changed(&state);
    Ok(axum::Json(Share {
        owner: actor.user_id.clone(),
        with: body.with_user_id,
    }))
}

/// Stop sharing the caller's calendar with a colleague.
#[utoipa::path(delete, path = "/api/v1/calendar/shares/{id}", tag = "events",
    params(("id" = String, Path, description = "The colleague's user id")),
    responses((status = 204, description = "No longer shared"), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn unshare_calendar(
    State(state): State<AppState>,
    actor: Actor,
    crate::platform::http::PathKey(with): crate::platform::http::PathKey,
) -> Result<StatusCode, ApiError> {
    let mut tx = Tx::new();
    let record = tx.bind(ids::record(
        "calendar_share",
        &format!("{}:{with}", actor.user_id),
    ));
    tx.push(format!("DELETE {record}"));
    tx.audit(
        &actor.audit(),
        "calendar.unshare",
        Some(("user", &with)),
        serde_json::json!({}),
    );
    tx.run(&state.db).await?;
    crate::sync_host::scopes_changed(&state);
    Ok(StatusCode::NO_CONTENT)
}
