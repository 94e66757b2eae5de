//! The follow-up record (联系记录): one visit, call, message or meeting with a customer.

use autosurgeon::{Hydrate, Reconcile, Text};

use super::rules::{self, Limits, Violation};
use super::{RecordType, ServerFields};

/// The kinds of follow-up.
pub const TYPES: [&str; 4] = ["visit", "call", "message", "meeting"];

/// A follow-up as a synced document.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct FollowUp {
    /// Always `follow_up`.
    #[autosurgeon(
        rename = "type",
        missing = "kind_name",
        hydrate = "crate::records::text::string"
    )]
    pub record_type: String,
    /// The customer's document id.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub customer: String,
    /// `visit`, `call`, `message` or `meeting`.
    #[autosurgeon(missing = "default_method", hydrate = "crate::records::text::string")]
    pub method: String,
    /// When it happened, RFC 3339 (as recorded by the device, which may have been offline).
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub at: String,
    /// What was said and agreed.
    #[autosurgeon(missing = "Default::default")]
    pub content: Text,
    /// Where, as text or coordinates.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub location: Option<String>,
    /// When to contact the customer next, RFC 3339.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub next_contact_at: Option<String>,
    /// Files attached (their metadata; the bytes live elsewhere).
    #[autosurgeon(missing = "Default::default")]
    pub attachments: Vec<Attachment>,
    /// Server-owned fields.
    #[autosurgeon(missing = "Default::default")]
    pub server: ServerFields,
}

/// Metadata of an attached file.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Attachment {
    /// Stable id.
    #[key]
    #[autosurgeon(hydrate = "crate::records::text::string")]
    pub id: String,
    /// File name.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub name: String,
    /// Media type.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub media_type: String,
    /// Size in bytes.
    #[autosurgeon(missing = "Default::default")]
    pub size: u64,
}

fn kind_name() -> String {
    FollowUp::KIND.into()
}

fn default_method() -> String {
    "visit".into()
}

impl FollowUp {
    /// A new follow-up of `customer` (its document id).
    pub fn new(customer: impl Into<String>, method: &str, at: impl Into<String>) -> Self {
        Self {
            record_type: Self::KIND.into(),
            customer: customer.into(),
            method: method.into(),
            at: at.into(),
            content: Text::default(),
            location: None,
            next_contact_at: None,
            attachments: Vec::new(),
            server: ServerFields::default(),
        }
    }
}

impl RecordType for FollowUp {
    const KIND: &'static str = "follow_up";

    fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        rules::one_of(&mut out, "type", &self.record_type, &[Self::KIND]);
        rules::required(&mut out, "customer", &self.customer, Limits::SHORT);
        rules::one_of(&mut out, "method", &self.method, &TYPES);
        rules::required(&mut out, "at", &self.at, Limits::SHORT);
        rules::timestamp(
            &mut out,
            "at",
            Some(&self.at).filter(|a| !a.is_empty()).map(|a| a.as_str()),
        );
        rules::optional(
            &mut out,
            "content",
            Some(self.content.as_str()),
            Limits::TEXT,
        );
        rules::optional(
            &mut out,
            "location",
            self.location.as_deref(),
            Limits::ADDRESS,
        );
        rules::timestamp(&mut out, "next_contact_at", self.next_contact_at.as_deref());
        if self.attachments.len() > Limits::ATTACHMENTS {
            out.push(Violation::new(
                "attachments",
                format!("must have at most {} items", Limits::ATTACHMENTS),
            ));
        }
        for (i, a) in self.attachments.iter().enumerate() {
            rules::required(
                &mut out,
                &format!("attachments[{i}].id"),
                &a.id,
                Limits::SHORT,
            );
            rules::required(
                &mut out,
                &format!("attachments[{i}].name"),
                &a.name,
                Limits::NAME,
            );
            rules::optional(
                &mut out,
                &format!("attachments[{i}].media_type"),
                Some(&a.media_type),
                Limits::SHORT,
            );
        }
        out
    }

    fn rebase_text(&mut self, base: &Self) {
        super::rebase(&mut self.content, &base.content);
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
        c.restore("customer", &mut fixed.customer, &previous.customer);
        c.restore("method", &mut fixed.method, &previous.method);
        c.restore("at", &mut fixed.at, &previous.at);
        c.restore("content", &mut fixed.content, &previous.content);
        c.restore("location", &mut fixed.location, &previous.location);
        c.restore(
            "next_contact_at",
            &mut fixed.next_contact_at,
            &previous.next_contact_at,
        );
        c.restore("attachments", &mut fixed.attachments, &previous.attachments);
        if !previous.customer.is_empty() && fixed.customer != previous.customer {
            fixed.customer = previous.customer.clone();
            c.push(Violation::new(
                "customer",
                "a follow-up cannot move to another customer",
            ));
        }
        let mut corrections = c.finish();
        super::keep_server_fields(&mut fixed.server, &previous.server, &mut corrections);
        (fixed, corrections)
    }
}
