//! Notifications: what the server tells a user (a task is due, ...). Every notification lands in
//! the user's in-app inbox (`GET /api/v1/notifications`); other channels (email, SMS, DingTalk,
//! WeCom) implement [`delivery::Channel`] and deliver a copy, as each user chooses per kind.
//!
//! A notification's key is derived from what it is about ([`Notification::key`]), so a job that
//! runs twice (as any job may) cannot notify twice.

pub mod delivery;

use axum::extract::State;
use chrono::{DateTime, Utc};
use outpost_mobile::api::{Page, Problem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::Actor;
use crate::error::ApiError;
use crate::platform::db::{Db, DbError, Query, Tx};
use crate::platform::http::{ApiQuery, Order, PageParams, PathKey, fetch_page};
use crate::platform::ids;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notifications))
        .routes(routes!(mark_read))
        .routes(routes!(get_settings, put_settings))
}

/// The kinds of notification there are, with what they are for.
pub const KINDS: [(&str, &str); 3] = [
    ("task.reminder", "a task is due soon"),
    ("event.reminder", "an event starts soon"),
    ("digest", "the morning digest"),
];

/// `GET` and `PUT /api/v1/me/notification-settings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Channels per kind (`inbox`, `email`); kinds left out go to every channel. The inbox
    /// always keeps a copy.
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, Vec<String>>,
    /// Quiet hours start, local `HH:MM`: non-urgent messages wait until `quiet_end`.
    pub quiet_start: Option<String>,
    /// Quiet hours end, local `HH:MM`.
    pub quiet_end: Option<String>,
}

/// The caller's notification settings.
#[utoipa::path(get, path = "/api/v1/me/notification-settings", tag = "notifications",
    responses((status = 200, body = SettingsBody), (status = 401, body = Problem)),
    security(("bearer" = [])))]
async fn get_settings(
    State(state): State<AppState>,
    actor: Actor,
) -> Result<axum::Json<SettingsBody>, ApiError> {
    let settings = delivery::settings_of(&state.db, &actor.user_id).await?;
    Ok(axum::Json(SettingsBody {
        channels: KINDS
            .iter()
            .map(|(kind, _)| (kind.to_string(), settings.channels_for(kind)))
            .collect(),
        quiet_start: settings.quiet_start,
        quiet_end: settings.quiet_end,
    }))
}

/// Replaces the caller's notification settings.
#[utoipa::path(put, path = "/api/v1/me/notification-settings", tag = "notifications", request_body = SettingsBody,
    responses((status = 200, body = SettingsBody), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn put_settings(
    State(state): State<AppState>,
    actor: Actor,
    crate::platform::http::ApiJson(body): crate::platform::http::ApiJson<SettingsBody>,
) -> Result<axum::Json<SettingsBody>, ApiError> {
    let mut errors = Vec::new();
    for (kind, channels) in &body.channels {
        if !KINDS.iter().any(|(k, _)| k == kind) {
            errors.push(outpost_mobile::api::FieldError {
                field: format!("channels.{kind}"),
                message: "is not a kind of notification".into(),
            });
        }
        for channel in channels {
            if !delivery::CHANNELS.contains(&channel.as_str()) {
                errors.push(outpost_mobile::api::FieldError {
                    field: format!("channels.{kind}"),
                    message: format!("`{channel}` is not a channel (inbox, email)"),
                });
            }
        }
    }
    for (field, value) in [
        ("quiet_start", &body.quiet_start),
        ("quiet_end", &body.quiet_end),
    ] {
        if let Some(value) = value
            && chrono::NaiveTime::parse_from_str(value, "%H:%M").is_err()
        {
            errors.push(outpost_mobile::api::FieldError {
                field: field.into(),
                message: "must be a local time HH:MM".into(),
            });
        }
    }
    if body.quiet_start.is_some() != body.quiet_end.is_some() {
        errors.push(outpost_mobile::api::FieldError {
            field: "quiet_end".into(),
            message: "quiet hours need both a start and an end".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let settings = delivery::Settings {
        channels: body.channels,
        quiet_start: body.quiet_start,
        quiet_end: body.quiet_end,
    };
    let mut tx = crate::platform::db::Tx::new();
    let record = tx.bind(ids::record("notification_setting", &actor.user_id));
    let channels = tx.bind(settings.channels.clone());
    let quiet_start = tx.bind(settings.quiet_start.clone());
    let quiet_end = tx.bind(settings.quiet_end.clone());
    tx.push(format!(
        "UPSERT {record} SET channels = {channels}, quiet_start = {quiet_start}, quiet_end = {quiet_end}, updated_at = time::now()"
    ));
    tx.audit(
        &actor.audit(),
        "notification.settings",
        Some(("user", &actor.user_id)),
        serde_json::json!({ "quiet_start": settings.quiet_start, "quiet_end": settings.quiet_end }),
    );
    tx.run(&state.db).await?;
    get_settings(State(state), actor).await
}

/// A message for one user.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The recipient (user id).
    pub user: String,
    /// What kind, e.g. `task.reminder`; users choose channels per kind.
    pub kind: String,
    /// One line.
    pub title: String,
    /// The details.
    pub body: String,
    /// What it is about: (record kind, record id).
    pub subject: Option<(String, String)>,
    /// What makes it unique besides kind, user and subject (e.g. the due time and the reminder
    /// offset of a task reminder).
    pub occasion: String,
    /// Urgent messages ignore the user's quiet hours.
    pub urgent: bool,
}

impl Notification {
    /// The key: a UUID-shaped digest of user, kind, subject and occasion.
    pub fn key(&self) -> String {
        let (subject_kind, subject_id) = self.subject.clone().unwrap_or_default();
        let digest = Sha256::new()
            .chain_update(self.user.as_bytes())
            .chain_update([0])
            .chain_update(self.kind.as_bytes())
            .chain_update([0])
            .chain_update(subject_kind.as_bytes())
            .chain_update([0])
            .chain_update(subject_id.as_bytes())
            .chain_update([0])
            .chain_update(self.occasion.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        uuid::Uuid::from_bytes(bytes).to_string()
    }
}

/// Stores `notification` in the recipient's inbox unless it is already there, and plans its
/// delivery through the user's other channels in the same transaction (so a reader that sees
/// it in the inbox sees its deliveries too, and a crash leaves neither); returns whether it is
/// new (a notification seen before goes nowhere again).
pub async fn notify(db: &Db, notification: &Notification) -> Result<bool, DbError> {
    let (subject_kind, subject_id) = notification.subject.clone().unzip();
    let key = notification.key();
    // A repeated notification (a warning the sweep raises again every ten minutes) stops at
    // one read, before the deliveries are planned; the transaction checks again.
    let seen: bool = Query::new("RETURN record::exists($record)")
        .bind("record", ids::record("notification", &key))
        .take::<Option<bool>>(db, 0)
        .await?
        .unwrap_or(false);
    if seen {
        return Ok(false);
    }
    let mut tx = Tx::new();
    let record = tx.bind(ids::record("notification", &key));
    let already = tx.bind(ALREADY_NOTIFIED);
    let (user, kind, title, body) = (
        tx.bind(notification.user.clone()),
        tx.bind(notification.kind.clone()),
        tx.bind(notification.title.clone()),
        tx.bind(notification.body.clone()),
    );
    let (subject_kind, subject_id) = (tx.bind(subject_kind), tx.bind(subject_id));
    tx.push(format!("IF record::exists({record}) {{ THROW {already} }}"));
    tx.push(format!(
        "CREATE {record} SET user = {user}, kind = {kind}, title = {title}, body = {body},
           subject_kind = {subject_kind}, subject_id = {subject_id}, created_at = time::now(), read_at = NONE RETURN NONE"
    ));
    delivery::plan_in(db, &mut tx, notification, &key).await?;
    match tx.run(db).await {
        Ok(_) => Ok(true),
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains(ALREADY_NOTIFIED)) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// What the notifying transaction throws when the notification was stored before.
const ALREADY_NOTIFIED: &str = "already-notified";

/// A stored notification.
#[derive(Debug, Clone, SurrealValue)]
pub struct NotificationRow {
    id: RecordId,
    user: String,
    kind: String,
    title: String,
    body: String,
    subject_kind: Option<String>,
    subject_id: Option<String>,
    created_at: DateTime<Utc>,
    read_at: Option<DateTime<Utc>>,
}

/// A notification in the inbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    /// Id.
    pub id: String,
    /// What kind, e.g. `task.reminder`.
    pub kind: String,
    /// One line.
    pub title: String,
    /// The details.
    pub body: String,
    /// The kind of record it is about, e.g. `task`.
    pub subject_kind: Option<String>,
    /// The record it is about (a document id for synced records).
    pub subject_id: Option<String>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When the user read it.
    pub read_at: Option<DateTime<Utc>>,
}

impl From<NotificationRow> for NotificationView {
    fn from(row: NotificationRow) -> Self {
        Self {
            id: ids::key_of(&row.id),
            kind: row.kind,
            title: row.title,
            body: row.body,
            subject_kind: row.subject_kind,
            subject_id: row.subject_id,
            created_at: row.created_at,
            read_at: row.read_at,
        }
    }
}

/// Filters of the inbox.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationFilter {
    /// Only unread ones.
    pub unread: Option<bool>,
    /// Items per page, 1 to 200.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The caller's inbox, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(NotificationFilter),
    responses((status = 200, body = Page<NotificationView>), (status = 401, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn list_notifications(
    State(state): State<AppState>,
    actor: Actor,
    ApiQuery(filter): ApiQuery<NotificationFilter>,
) -> Result<axum::Json<Page<NotificationView>>, ApiError> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    }
    .validate()?;
    let condition = Query::new("user = $me AND ($unread != true OR read_at = NONE)")
        .bind("me", actor.user_id.clone())
        .bind("unread", filter.unread.unwrap_or(false));
    let page = fetch_page::<NotificationRow, NotificationView>(
        &state.db,
        "notification",
        condition,
        &page,
        Order::NewestFirst,
        |n| n.id.clone(),
    )
    .await?;
    Ok(axum::Json(page))
}

/// Marks one of the caller's notifications read (again is fine).
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, description = "The notification's id")),
    responses((status = 200, body = NotificationView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn mark_read(
    State(state): State<AppState>,
    actor: Actor,
    PathKey(key): PathKey,
) -> Result<axum::Json<NotificationView>, ApiError> {
    let row: Option<NotificationRow> = Query::new(
        "UPDATE ONLY $record SET read_at = read_at ?? time::now() WHERE user = $me RETURN AFTER",
    )
    .bind("record", ids::record("notification", &key))
    .bind("me", actor.user_id.clone())
    .take(&state.db, 0)
    .await?;
    // Someone else's notification is as missing as one that does not exist.
    Ok(axum::Json(
        row.ok_or(ApiError::NotFound("notification"))?.into(),
    ))
}
