//! The task record: something to do by a time, maybe for a customer, with reminders before it is
//! due.

use autosurgeon::{Hydrate, Reconcile, Text};

use super::rules::{self, Limits, Violation};
use super::{RecordType, ServerFields};

/// A task's states.
pub const STATUSES: [&str; 3] = ["open", "done", "cancelled"];
/// At most this many reminders per task.
pub const MAX_REMINDERS: usize = 5;
/// The earliest reminder: a week before the due time, in minutes.
pub const MAX_REMINDER_MINUTES: i64 = 7 * 24 * 60;

/// A task as a synced document.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Task {
    /// Always `task`.
    #[autosurgeon(
        rename = "type",
        missing = "kind_name",
        hydrate = "crate::records::text::string"
    )]
    pub record_type: String,
    /// What to do.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub title: String,
    /// Details, merged character by character.
    #[autosurgeon(missing = "Default::default")]
    pub notes: Text,
    /// When it is due, RFC 3339.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub due_at: Option<String>,
    /// The customer it is for (document id).
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub customer: Option<String>,
    /// Who does it (user id); reminders go to them, else to the owner.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub assignee: Option<String>,
    /// `open`, `done` or `cancelled`.
    #[autosurgeon(missing = "default_status", hydrate = "crate::records::text::string")]
    pub status: String,
    /// Reminders, in minutes before the due time.
    #[autosurgeon(missing = "Default::default")]
    pub reminders: Vec<i64>,
    /// Server-owned fields.
    #[autosurgeon(missing = "Default::default")]
    pub server: ServerFields,
}

fn kind_name() -> String {
    Task::KIND.into()
}

fn default_status() -> String {
    "open".into()
}

impl Task {
    /// A new open task.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            record_type: Self::KIND.into(),
            title: title.into(),
            notes: Text::default(),
            due_at: None,
            customer: None,
            assignee: None,
            status: default_status(),
            reminders: Vec::new(),
            server: ServerFields::default(),
        }
    }
}

impl RecordType for Task {
    const KIND: &'static str = "task";

    fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        rules::one_of(&mut out, "type", &self.record_type, &[Self::KIND]);
        rules::required(&mut out, "title", &self.title, Limits::NAME);
        rules::optional(&mut out, "notes", Some(self.notes.as_str()), Limits::TEXT);
        rules::timestamp(&mut out, "due_at", self.due_at.as_deref());
        rules::optional(
            &mut out,
            "customer",
            self.customer.as_deref(),
            Limits::SHORT,
        );
        rules::optional(
            &mut out,
            "assignee",
            self.assignee.as_deref(),
            Limits::SHORT,
        );
        rules::one_of(&mut out, "status", &self.status, &STATUSES);
        if self.reminders.len() > MAX_REMINDERS {
            out.push(Violation::new(
                "reminders",
                format!("must have at most {MAX_REMINDERS} items"),
            ));
        }
        for (i, minutes) in self.reminders.iter().enumerate() {
            if !(0..=MAX_REMINDER_MINUTES).contains(minutes) {
                out.push(Violation::new(
                    format!("reminders[{i}]"),
                    format!("must be 0 to {MAX_REMINDER_MINUTES} minutes before the due time"),
                ));
            }
        }
        if !self.reminders.is_empty() && self.due_at.is_none() {
            out.push(Violation::new("due_at", "is needed by the reminders"));
        }
        out
    }

    fn rebase_text(&mut self, base: &Self) {
        super::rebase(&mut self.notes, &base.notes);
    }

    fn server(&self) -> &ServerFields {
        &self.server
    }

    fn server_mut(&mut self) -> &mut ServerFields {
        &mut self.server
    }

    fn correct(previous: &Self, proposed: &Self) -> (Self, Vec<Violation>) {
        let mut fixed = proposed.clone();
        let mut c = rules::Corrector::new(proposed.validate());
        c.restore("type", &mut fixed.record_type, &previous.record_type);
        c.restore("title", &mut fixed.title, &previous.title);
        c.restore("notes", &mut fixed.notes, &previous.notes);
        c.restore("due_at", &mut fixed.due_at, &previous.due_at);
        c.restore("customer", &mut fixed.customer, &previous.customer);
        c.restore("assignee", &mut fixed.assignee, &previous.assignee);
        c.restore("status", &mut fixed.status, &previous.status);
        c.restore("reminders", &mut fixed.reminders, &previous.reminders);
        let mut corrections = c.finish();
        super::keep_server_fields(&mut fixed.server, &previous.server, &mut corrections);
        (fixed, corrections)
    }
}
