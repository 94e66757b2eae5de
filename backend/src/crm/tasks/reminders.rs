//! Task reminders: planned as jobs when a task changes, checked against the task when they run.
//!
//! Each reminder job carries the due time and the offset it was planned for. A changed due time
//! plans new jobs; the old ones find the task no longer matches and do nothing, as do the jobs of
//! a task that is done, cancelled or deleted. The notification's key includes the due time and
//! the offset, so a job that runs twice notifies once.

use chrono::{DateTime, Utc};
use outpost_mobile::records::task::Task;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;

use crate::crm::notifications::{Notification, notify};
use crate::jobs::{Job, JobError, JobOptions, Priority, enqueue_in};
use crate::platform::db::{Db, DbError, Tx};

/// "Remind about task `task`, due at `due_at`, `minutes` before."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReminder {
    /// The task's document id.
    pub task: String,
    /// The due time the reminder was planned for.
    pub due_at: String,
    /// How long before it.
    pub minutes: i64,
}

impl Job for TaskReminder {
    const QUEUE: &'static str = "task.reminder";
}

/// When each reminder of something due at `due_at` goes out: `minutes` before it, or at once
/// when that time has passed but `due_at` has not. Something already due gets none.
pub fn reminder_times(due_at: &str, minutes: &[i64]) -> Vec<(i64, DateTime<Utc>)> {
    let Ok(due) = DateTime::parse_from_rfc3339(due_at).map(|d| d.with_timezone(&Utc)) else {
        return Vec::new();
    };
    let now = Utc::now();
    if due <= now {
        return Vec::new();
    }
    minutes
        .iter()
        .map(|m| (*m, (due - chrono::Duration::minutes(*m)).max(now)))
        .collect()
}

/// The options of a reminder job due at `at`: urgent lane, and unique, so that planning the same
/// reminder again (any later edit of the record) adds nothing.
pub fn reminder_options(at: DateTime<Utc>) -> JobOptions {
    JobOptions {
        run_at: Some(at),
        priority: Priority::High,
        unique: true,
        ..JobOptions::default()
    }
}

/// Adds the reminder jobs of `task` (document `id`) to `tx`.
pub fn plan(tx: &mut Tx, id: &str, task: &Task) -> Result<(), JobError> {
    if task.status != "open" || task.server.state == "deleted" {
        return Ok(());
    }
    let Some(due_at) = task.due_at.as_deref() else {
        return Ok(());
    };
    for (minutes, at) in reminder_times(due_at, &task.reminders) {
        let job = TaskReminder {
            task: id.to_string(),
            due_at: due_at.to_string(),
            minutes,
        };
        enqueue_in(tx, &job, &reminder_options(at))?;
    }
    Ok(())
}

#[derive(Debug, SurrealValue)]
struct TaskNow {
    title: String,
    due_at: Option<String>,
    status: String,
    reminders: Vec<i64>,
    assignee: Option<String>,
    owner: Option<String>,
    state: String,
}

/// Runs one reminder: notifies the assignee (else the owner) if the task still is open, due at
/// the same time, and still has this reminder. Returns whether a notification was sent.
pub async fn remind(db: &Db, job: &TaskReminder) -> Result<bool, DbError> {
    let task: Option<TaskNow> = db.get("task", &job.task).await?;
    let Some(task) = task else {
        return Ok(false);
    };
    let current = task.state != "deleted"
        && task.status == "open"
        && task.due_at.as_deref() == Some(job.due_at.as_str())
        && task.reminders.contains(&job.minutes);
    let Some(user) = task.assignee.or(task.owner).filter(|_| current) else {
        return Ok(false);
    };
    let body = if job.minutes == 0 {
        format!("Due now ({})", job.due_at)
    } else {
        format!("Due in {} min ({})", job.minutes, job.due_at)
    };
    notify(
        db,
        &Notification {
            user,
            kind: "task.reminder".into(),
            title: task.title,
            body,
            subject: Some(("task".into(), job.task.clone())),
            occasion: format!("{}@{}", job.due_at, job.minutes),
            // A reminder within the hour cannot wait for the end of the quiet hours.
            urgent: job.minutes <= 60,
        },
    )
    .await
}
