//! The morning digest: at 08:00 in each user's time zone, one message with the day's events,
//! the tasks due that day and the overdue ones.
//!
//! A sweep runs every quarter of an hour through the job queue and sends the digest to every
//! active user whose local time is past 08:00 and who has not had today's. "Today's" is part of
//! the notification's key, so the digest goes out once per user and local day, whichever node
//! sweeps and however often, across restarts; a server that was down at 08:00 sends it at the
//! first sweep after it comes back. Users with nothing due or overdue get no digest.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use surrealdb::types::SurrealValue;

use crate::crm::notifications::{Notification, notify};
use crate::platform::db::{Db, DbError, Query};

/// The digest's queue (its sweep is a cron job).
pub const QUEUE: &str = "digest.sweep";
/// The default of `jobs.digest_schedule`: every quarter of an hour (seconds first).
pub const SCHEDULE: &str = "0 */15 * * * *";

/// The local time the digest goes out.
fn digest_time() -> NaiveTime {
    NaiveTime::from_hms_opt(8, 0, 0).unwrap_or(NaiveTime::MIN)
}

#[derive(Debug, SurrealValue)]
struct Recipient {
    id: String,
    time_zone: String,
}

#[derive(Debug, SurrealValue)]
struct AttendeeNow {
    user: String,
    response: String,
}

#[derive(Debug, SurrealValue)]
struct DayEvent {
    title: String,
    starts: Option<DateTime<Utc>>,
    location: Option<String>,
    owner: Option<String>,
    attendees: Vec<AttendeeNow>,
}

#[derive(Debug, SurrealValue)]
struct OpenTask {
    title: String,
    due_at: Option<String>,
}

/// Sends the digests due at `now`; returns how many were sent.
pub async fn sweep(db: &Db, now: DateTime<Utc>) -> Result<usize, DbError> {
    let users: Vec<Recipient> =
        Query::new("SELECT record::id(id) AS id, time_zone FROM user WHERE active = true")
            .take(db, 0)
            .await?;
    let mut sent = 0;
    for user in users {
        let tz: Tz = user.time_zone.parse().unwrap_or(chrono_tz::Asia::Shanghai);
        let local = now.with_timezone(&tz);
        if local.time() < digest_time() {
            continue;
        }
        if send(db, &user.id, tz, local.date_naive()).await? {
            sent += 1;
        }
    }
    Ok(sent)
}

/// The digest of `user` for local day `day`; whether it was sent now.
async fn send(db: &Db, user: &str, tz: Tz, day: NaiveDate) -> Result<bool, DbError> {
    let tasks: Vec<OpenTask> = Query::new(
        "SELECT title, due_at FROM task
           WHERE state != 'deleted' AND status = 'open' AND due_at != NONE
             AND (assignee = $user OR (assignee = NONE AND owner = $user))",
    )
    .bind("user", user.to_string())
    .take(db, 0)
    .await?;
    let start = tz
        .from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .map(|t| t.with_timezone(&Utc));
    let end = day.succ_opt().and_then(|next| {
        tz.from_local_datetime(&next.and_time(NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    });
    let (Some(start), Some(end)) = (start, end) else {
        return Ok(false);
    };
    let day_events: Vec<DayEvent> = Query::new(
        "SELECT title, starts, location, owner, attendees FROM event
           WHERE state != 'deleted' AND starts >= $start AND starts < $end
             AND (owner = $user OR $user IN attendee_ids)",
    )
    .bind("user", user.to_string())
    .bind("start", start)
    .bind("end", end)
    .take(db, 0)
    .await?;
    let mut events: Vec<(DateTime<Utc>, String)> = day_events
        .into_iter()
        .filter(|e| {
            e.owner.as_deref() == Some(user)
                || e.attendees
                    .iter()
                    .any(|a| a.user == user && a.response != "declined")
        })
        .filter_map(|e| {
            let starts = e.starts?;
            let place = e.location.map(|l| format!(" ({l})")).unwrap_or_default();
            Some((
                starts,
                format!(
                    "- {} {}{place}",
                    starts.with_timezone(&tz).format("%H:%M"),
                    e.title
                ),
            ))
        })
        .collect();
    events.sort();
    let mut today = Vec::new();
    let mut overdue = Vec::new();
    for task in tasks {
        let Some(due) = task
            .due_at
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc))
        else {
            continue;
        };
        let local = due.with_timezone(&tz).format("%H:%M");
        if due < start {
            overdue.push(format!(
                "- {} (due {})",
                task.title,
                due.with_timezone(&tz).format("%Y-%m-%d %H:%M")
            ));
        } else if due < end {
            today.push((due, format!("- {local} {}", task.title)));
        }
    }
    let returning = crate::crm::pool::returns::returning_soon(db, user, start).await?;
    if events.is_empty() && today.is_empty() && overdue.is_empty() && returning.is_empty() {
        return Ok(false);
    }
    today.sort();
    let mut body = String::new();
    if !events.is_empty() {
        body.push_str("Events:\n");
        for (_, line) in &events {
            body.push_str(line);
            body.push('\n');
        }
    }
    if !today.is_empty() {
        body.push_str("Tasks due today:\n");
        for (_, line) in &today {
            body.push_str(line);
            body.push('\n');
        }
    }
    if !overdue.is_empty() {
        body.push_str("Overdue:\n");
        for line in &overdue {
            body.push_str(line);
            body.push('\n');
        }
    }
    if !returning.is_empty() {
        body.push_str("Returning to the pool unless you follow up:\n");
        for (at, name) in &returning {
            body.push_str(&format!(
                "- {name}: {}\n",
                at.with_timezone(&tz).format("%Y-%m-%d %H:%M")
            ));
        }
    }
    notify(
        db,
        &Notification {
            user: user.to_string(),
            kind: "digest".into(),
            title: format!(
                "{day}: {} events, {} tasks due, {} overdue",
                events.len(),
                today.len(),
                overdue.len()
            ),
            body,
            subject: None,
            occasion: day.to_string(),
            urgent: false,
        },
    )
    .await
}
