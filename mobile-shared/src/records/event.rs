//! The calendar event (日程): a time, a place, maybe a customer, and colleagues invited to it.
//!
//! Attendees are listed in the document with their answer. The organizer (any device that may
//! edit the event) adds and removes attendees, who start as `invited`; an answer changes only
//! through the attendee's accept or decline command on the server, so a device's edit to an
//! answer is undone like an edit to a server-owned field.

use autosurgeon::{Hydrate, Reconcile, Text};

use super::rules::{self, Limits, Violation};
use super::{RecordType, ServerFields};

/// An attendee's possible answers.
pub const RESPONSES: [&str; 3] = ["invited", "accepted", "declined"];
/// Who sees the details: `default` (everyone who sees the calendar) or `private` (only the
/// organizer and attendees; others see that the time is taken).
pub const VISIBILITIES: [&str; 2] = ["default", "private"];
/// At most this many attendees.
pub const MAX_ATTENDEES: usize = 50;

/// A calendar event as a synced document.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Event {
    /// Always `event`.
    #[autosurgeon(
        rename = "type",
        missing = "kind_name",
        hydrate = "crate::records::text::string"
    )]
    pub record_type: String,
    /// What it is.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub title: String,
    /// Details.
    #[autosurgeon(missing = "Default::default")]
    pub notes: Text,
    /// Start, RFC 3339.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub starts_at: String,
    /// End, RFC 3339.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub ends_at: String,
    /// A whole-day event (the times mark the days).
    #[autosurgeon(missing = "Default::default")]
    pub all_day: bool,
    /// Where.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub location: Option<String>,
    /// The customer it is with (document id).
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub customer: Option<String>,
    /// Colleagues invited.
    #[autosurgeon(missing = "Default::default")]
    pub attendees: Vec<Attendee>,
    /// `default` or `private`.
    #[autosurgeon(
        missing = "default_visibility",
        hydrate = "crate::records::text::string"
    )]
    pub visibility: String,
    /// Reminders, in minutes before the start.
    #[autosurgeon(missing = "Default::default")]
    pub reminders: Vec<i64>,
    /// Server-owned fields.
    #[autosurgeon(missing = "Default::default")]
    pub server: ServerFields,
}

/// One invited colleague and their answer.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate)]
pub struct Attendee {
    /// The user's id.
    #[key]
    #[autosurgeon(hydrate = "crate::records::text::string")]
    pub user: String,
    /// `invited`, `accepted` or `declined`.
    #[autosurgeon(missing = "default_response", hydrate = "crate::records::text::string")]
    pub response: String,
}

impl Attendee {
    /// A newly invited colleague.
    pub fn invited(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            response: default_response(),
        }
    }
}

fn kind_name() -> String {
    Event::KIND.into()
}

fn default_visibility() -> String {
    "default".into()
}

fn default_response() -> String {
    "invited".into()
}

impl Event {
    /// A new event from `starts_at` to `ends_at` (RFC 3339).
    pub fn new(
        title: impl Into<String>,
        starts_at: impl Into<String>,
        ends_at: impl Into<String>,
    ) -> Self {
        Self {
            record_type: Self::KIND.into(),
            title: title.into(),
            notes: Text::default(),
            starts_at: starts_at.into(),
            ends_at: ends_at.into(),
            all_day: false,
            location: None,
            customer: None,
            attendees: Vec::new(),
            visibility: default_visibility(),
            reminders: Vec::new(),
            server: ServerFields::default(),
        }
    }
}

impl RecordType for Event {
    const KIND: &'static str = "event";

    fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        rules::one_of(&mut out, "type", &self.record_type, &[Self::KIND]);
        rules::required(&mut out, "title", &self.title, Limits::NAME);
        rules::optional(&mut out, "notes", Some(self.notes.as_str()), Limits::TEXT);
        rules::required(&mut out, "starts_at", &self.starts_at, Limits::SHORT);
        rules::timestamp(
            &mut out,
            "starts_at",
            Some(&self.starts_at)
                .filter(|s| !s.is_empty())
                .map(String::as_str),
        );
        rules::required(&mut out, "ends_at", &self.ends_at, Limits::SHORT);
        rules::timestamp(
            &mut out,
            "ends_at",
            Some(&self.ends_at)
                .filter(|s| !s.is_empty())
                .map(String::as_str),
        );
        if let (Ok(start), Ok(end)) = (
            chrono::DateTime::parse_from_rfc3339(&self.starts_at),
            chrono::DateTime::parse_from_rfc3339(&self.ends_at),
        ) && end < start
        {
            out.push(Violation::new("ends_at", "must not be before starts_at"));
        }
        rules::optional(
            &mut out,
            "location",
            self.location.as_deref(),
            Limits::ADDRESS,
        );
        rules::optional(
            &mut out,
            "customer",
            self.customer.as_deref(),
            Limits::SHORT,
        );
        rules::one_of(&mut out, "visibility", &self.visibility, &VISIBILITIES);
        if self.attendees.len() > MAX_ATTENDEES {
            out.push(Violation::new(
                "attendees",
                format!("must have at most {MAX_ATTENDEES} items"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, attendee) in self.attendees.iter().enumerate() {
            rules::required(
                &mut out,
                &format!("attendees[{i}].user"),
                &attendee.user,
                Limits::SHORT,
            );
            if !seen.insert(attendee.user.as_str()) {
                out.push(Violation::new(
                    format!("attendees[{i}].user"),
                    "is invited twice",
                ));
            }
            rules::one_of(
                &mut out,
                &format!("attendees[{i}].response"),
                &attendee.response,
                &RESPONSES,
            );
        }
        if self.reminders.len() > super::task::MAX_REMINDERS {
            out.push(Violation::new(
                "reminders",
                format!("must have at most {} items", super::task::MAX_REMINDERS),
            ));
        }
        for (i, minutes) in self.reminders.iter().enumerate() {
            if !(0..=super::task::MAX_REMINDER_MINUTES).contains(minutes) {
                out.push(Violation::new(
                    format!("reminders[{i}]"),
                    format!(
                        "must be 0 to {} minutes before the start",
                        super::task::MAX_REMINDER_MINUTES
                    ),
                ));
            }
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
        c.restore("starts_at", &mut fixed.starts_at, &previous.starts_at);
        c.restore("ends_at", &mut fixed.ends_at, &previous.ends_at);
        c.restore("location", &mut fixed.location, &previous.location);
        c.restore("customer", &mut fixed.customer, &previous.customer);
        c.restore("visibility", &mut fixed.visibility, &previous.visibility);
        c.restore("attendees", &mut fixed.attendees, &previous.attendees);
        c.restore("reminders", &mut fixed.reminders, &previous.reminders);
        // Answers change only through the attendee's command: a device keeps the previous
        // answer of an attendee it did not add, and adds attendees as invited.
        for attendee in &mut fixed.attendees {
            let before = previous
                .attendees
                .iter()
                .find(|a| a.user == attendee.user)
                .map_or("invited", |a| a.response.as_str());
            if attendee.response != before {
                c.push(Violation::new(
                    "attendees.response",
                    "an answer is given by the attendee's accept or decline",
                ));
                attendee.response = before.to_string();
            }
        }
        let mut corrections = c.finish();
        super::keep_server_fields(&mut fixed.server, &previous.server, &mut corrections);
        (fixed, corrections)
    }
}
