//! Event reminders: to the organizer and every attendee who has not declined, planned when the
//! event changes and checked against the event when they run (see the task reminders, which work
//! the same way).

use outpost_mobile::records::event::Event;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;

use crate::crm::notifications::{Notification, notify};
use crate::crm::tasks::reminders::{reminder_options, reminder_times};
use crate::jobs::{Job, JobError, enqueue_in};
use crate::platform::db::{Db, DbError, Tx};

/// "Remind about event `event`, starting at `starts_at`, `minutes` before."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReminder {
    /// The event's document id.
    pub event: String,
    /// The start the reminder was planned for.
    pub starts_at: String,
    /// How long before it.
    pub minutes: i64,
}

impl Job for EventReminder {
    const QUEUE: &'static str = "event.reminder";
}

/// Adds the reminder jobs of `event` (document `id`) to `tx`.
pub fn plan(tx: &mut Tx, id: &str, event: &Event) -> Result<(), JobError> {
    if event.server.state == "deleted" {
        return Ok(());
    }
    for (minutes, at) in reminder_times(&event.starts_at, &event.reminders) {
        let job = EventReminder {
            event: id.to_string(),
            starts_at: event.starts_at.clone(),
            minutes,
        };
        enqueue_in(tx, &job, &reminder_options(at))?;
    }
    Ok(())
}

#[derive(Debug, SurrealValue)]
struct AttendeeNow {
    user: String,
    response: String,
}

#[derive(Debug, SurrealValue)]
struct EventNow {
    title: String,
    starts_at: String,
    location: Option<String>,
    reminders: Vec<i64>,
    attendees: Vec<AttendeeNow>,
    owner: Option<String>,
    state: String,
}

/// Runs one reminder; returns how many people were notified now.
pub async fn remind(db: &Db, job: &EventReminder) -> Result<usize, DbError> {
    let event: Option<EventNow> = db.get("event", &job.event).await?;
    let Some(event) = event else {
        return Ok(0);
    };
    if event.state == "deleted"
        || event.starts_at != job.starts_at
        || !event.reminders.contains(&job.minutes)
    {
        return Ok(0);
    }
    let people = event.owner.into_iter().chain(
        event
            .attendees
            .into_iter()
            .filter(|a| a.response != "declined")
            .map(|a| a.user),
    );
    let body = match &event.location {
        Some(place) => format!("Starts at {} in {place}", job.starts_at),
        None => format!("Starts at {}", job.starts_at),
    };
    let mut sent = 0;
    for user in people {
        let new = notify(
            db,
            &Notification {
                user,
                kind: "event.reminder".into(),
                title: event.title.clone(),
                body: body.clone(),
                subject: Some(("event".into(), job.event.clone())),
                occasion: format!("{}@{}", job.starts_at, job.minutes),
                urgent: job.minutes <= 60,
            },
        )
        .await?;
        sent += usize::from(new);
    }
    Ok(sent)
}
