//! A follow-up's "next contact time" becomes a task for the follow-up's owner.
//!
//! The follow-up's commit plans a job (unique per follow-up and time) in the same transaction;
//! the job creates the task through the sync engine under an id derived from the follow-up, so
//! running it twice creates one task, and a later next-contact time moves that task (while it is
//! still open) instead of adding another.

use apalis::prelude::BoxDynError;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_mobile::records::task::Task;
use outpost_sync::{Author, DocumentId, PeerIdentity};
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;

use crate::jobs::{Job, JobError, JobOptions, enqueue_in};
use crate::platform::db::{Db, Query, Tx};
use crate::sync_host::SyncEngine;

/// Minutes before the contact time that the owner is reminded.
const REMIND_MINUTES: i64 = 15;

/// "Make sure follow-up `follow_up` has a task at `at`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextContact {
    /// The follow-up's document id.
    pub follow_up: String,
    /// Its next contact time, RFC 3339.
    pub at: String,
}

impl Job for NextContact {
    const QUEUE: &'static str = "follow_up.next_contact";
}

/// Adds the job for `doc`'s next contact time (if any) to `tx`.
pub fn plan(tx: &mut Tx, id: &str, doc: &FollowUp) -> Result<(), JobError> {
    let Some(at) = doc.next_contact_at.clone() else {
        return Ok(());
    };
    if doc.server.state == "deleted" {
        return Ok(());
    }
    enqueue_in(
        tx,
        &NextContact {
            follow_up: id.to_string(),
            at,
        },
        &JobOptions {
            unique: true,
            ..JobOptions::default()
        },
    )
    .map(|_| ())
}

/// The id of the task a follow-up's next contact time becomes.
pub fn task_id(follow_up: &str) -> DocumentId {
    DocumentId::derived(&format!("next contact of follow-up {follow_up}"))
}

#[derive(Debug, SurrealValue)]
struct FollowUpNow {
    customer: String,
    next_contact_at: Option<String>,
    owner: Option<String>,
    state: String,
}

/// Runs the job: creates the task, or moves it to the new time while it is open.
pub async fn schedule(engine: &SyncEngine, db: &Db, job: &NextContact) -> Result<(), BoxDynError> {
    let row: Option<FollowUpNow> = db.get("follow_up", &job.follow_up).await?;
    let Some(row) = row else {
        return Ok(());
    };
    // A later edit planned its own job; this one is stale.
    if row.state == "deleted" || row.next_contact_at.as_deref() != Some(job.at.as_str()) {
        return Ok(());
    }
    let Some(owner) = row.owner else {
        return Ok(());
    };
    let name: Option<String> =
        Query::new("(SELECT VALUE name FROM ONLY type::record('customer', $customer))")
            .bind("customer", row.customer.clone())
            .take(db, 0)
            .await?;
    let author = Author {
        identity: PeerIdentity {
            user_id: owner.clone(),
            device_id: None,
        },
        channel: "job",
        request_id: None,
        bulk: false,
    };
    let id = task_id(&job.follow_up);
    let mut task = Task::new(format!(
        "Contact {}",
        name.unwrap_or_else(|| "the customer".into())
    ));
    task.due_at = Some(job.at.clone());
    task.customer = Some(row.customer);
    task.assignee = Some(owner);
    task.reminders = vec![REMIND_MINUTES];
    if engine.create_as(&author, &id, task).await?.is_none() {
        engine
            .update::<Task>(&author, &id, false, |t| {
                if t.status == "open" {
                    t.due_at = Some(job.at.clone());
                }
            })
            .await?;
    }
    Ok(())
}
