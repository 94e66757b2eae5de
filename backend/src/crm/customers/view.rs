//! The customer 360 view: one read a rep makes before a visit. The customer (as the caller may see
//! it), its contacts, its follow-ups newest first, its tasks and events, and who held it when;
//! every part filtered by the caller's scope. Opportunities, orders, payments and service
//! tickets join the timeline as later modules add them.

use axum::extract::State;
use chrono::{DateTime, Utc};
use outpost_mobile::api::Problem;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;

use super::Customer;
use crate::app::AppState;
use crate::crm::events::{EventRow, EventView};
use crate::crm::follow_ups::{FollowUp, FollowUpRow};
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::{newest_visible_about, parse_doc_id};
use crate::crm::tasks::{Task, TaskRow};
use crate::error::ApiError;
use crate::platform::db::Query;

/// Most items of each kind the view carries; the per-kind lists page beyond that.
const VIEW_ITEMS: usize = 100;

/// One change of hands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, SurrealValue)]
pub struct HistoryEntry {
    /// `create`, `claim`, `assign`, `transfer`, `release`, `return`, `merge`, `unmerge`.
    pub action: String,
    /// Owner before.
    pub from_owner: Option<String>,
    /// Owner after.
    pub to_owner: Option<String>,
    /// Who did it (absent: the pool's return sweep).
    pub by: Option<String>,
    /// The pool involved.
    pub pool: Option<String>,
    /// Why (a release's reason, the rule that returned it).
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// One entry of the timeline: something that happened with the customer, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// `follow_up`, `task`, `event` or `history`.
    pub kind: String,
    /// The document id of the follow-up, task or event.
    pub doc_id: Option<String>,
    /// A one-line summary.
    pub summary: String,
}

/// `GET /api/v1/customers/{doc_id}/360`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Customer360 {
    /// The customer as the caller may see it (phones masked for non-owners).
    pub customer: Customer,
    /// Its contacts (the same masking).
    #[schema(value_type = Vec<Object>)]
    pub contacts: serde_json::Value,
    /// Follow-ups, newest first.
    pub follow_ups: Vec<FollowUp>,
    /// Tasks about it.
    pub tasks: Vec<Task>,
    /// Events with it.
    pub events: Vec<EventView>,
    /// Who held it when, newest first.
    pub history: Vec<HistoryEntry>,
    /// Everything above in one list, newest first.
    pub timeline: Vec<TimelineEntry>,
    /// Opportunities (none until the sales module exists).
    #[schema(value_type = Vec<Object>)]
    pub opportunities: Vec<serde_json::Value>,
    /// Orders (none until the orders module exists).
    #[schema(value_type = Vec<Object>)]
    pub orders: Vec<serde_json::Value>,
    /// Payments (none until the finance module exists).
    #[schema(value_type = Vec<Object>)]
    pub payments: Vec<serde_json::Value>,
    /// Service tickets (none until the service module exists).
    #[schema(value_type = Vec<Object>)]
    pub service_tickets: Vec<serde_json::Value>,
}

/// The customer and everything around it, as the caller may see it.
#[utoipa::path(get, path = "/api/v1/customers/{doc_id}/360", tag = "customers",
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer360), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn customer_360(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<Customer360>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let id = parse_doc_id(&doc_id)?;
    let customer = super::readable(&state, &actor, &id).await?;
    // Events keep their visibility rule in the query (it reads calendar shares); a customer's
    // events are few, and their `(customer, timeline_key)` index keeps the read to that
    // customer, read forward (latest start first).
    let events = crate::crm::events::visible_condition(&actor);
    let query = Query::new(format!(
        "SELECT * FROM event WHERE customer = $customer AND {events} ORDER BY timeline_key ASC LIMIT $n;",
        events = events.sql(),
    ));
    let others = events
        .rebind(query)
        .bind("customer", doc_id.clone())
        .bind("n", VIEW_ITEMS as i64);
    let others = others.run(&state.db);
    let (follow_ups, tasks, mut results, history) = tokio::try_join!(
        newest_visible_about::<FollowUpRow>(&state.db, &actor, &doc_id, VIEW_ITEMS),
        newest_visible_about::<TaskRow>(&state.db, &actor, &doc_id, VIEW_ITEMS),
        others,
        super::history::newest(&state.db, &doc_id, VIEW_ITEMS),
    )?;
    let take = |e: surrealdb::Error| ApiError::Storage(e.into());
    let events: Vec<EventRow> = results.take(0).map_err(take)?;
    let follow_ups: Vec<FollowUp> = follow_ups.into_iter().map(FollowUp::from).collect();
    let tasks: Vec<Task> = tasks.into_iter().map(Task::from).collect();
    let events: Vec<EventView> = events
        .into_iter()
        .map(|e| EventView::of(e, &actor))
        .collect();
    let mut timeline: Vec<TimelineEntry> = Vec::new();
    for f in &follow_ups {
        timeline.push(TimelineEntry {
            at: DateTime::parse_from_rfc3339(&f.at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(f.created_at),
            kind: "follow_up".into(),
            doc_id: Some(f.doc_id.clone()),
            summary: format!(
                "{}: {}",
                f.method,
                f.content.chars().take(80).collect::<String>()
            ),
        });
    }
    for t in &tasks {
        timeline.push(TimelineEntry {
            at: t.created_at,
            kind: "task".into(),
            doc_id: Some(t.doc_id.clone()),
            summary: format!("{} ({})", t.title, t.status),
        });
    }
    for e in &events {
        timeline.push(TimelineEntry {
            at: DateTime::parse_from_rfc3339(&e.starts_at)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(e.created_at),
            kind: "event".into(),
            doc_id: Some(e.doc_id.clone()),
            summary: e.title.clone(),
        });
    }
    for h in &history {
        timeline.push(TimelineEntry {
            at: h.at,
            kind: "history".into(),
            doc_id: None,
            summary: match &h.reason {
                Some(reason) => format!("{}: {reason}", h.action),
                None => h.action.clone(),
            },
        });
    }
    timeline.sort_by_key(|e| std::cmp::Reverse(e.at));
    Ok(axum::Json(Customer360 {
        contacts: customer.contacts.clone(),
        customer,
        follow_ups,
        tasks,
        events,
        history,
        timeline,
        opportunities: Vec::new(),
        orders: Vec::new(),
        payments: Vec::new(),
        service_tickets: Vec::new(),
    }))
}
