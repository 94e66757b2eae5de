//! The customer document: a company or a person, with its contacts inside the document (one
//! aggregate), plus the server-owned ownership fields.

use autosurgeon::{Hydrate, Reconcile, Text};

use super::rules::{self, Limits, Violation};
use super::{RecordType, ServerFields};

/// The kinds of customer.
pub const KINDS: [&str; 2] = ["company", "person"];
/// Customer levels, from most to least valuable.
pub const LEVELS: [&str; 4] = ["A", "B", "C", "D"];

/// A customer as a synced document.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Customer {
    /// Always `customer`.
    #[autosurgeon(
        rename = "type",
        missing = "kind_name",
        hydrate = "crate::records::text::string"
    )]
    pub record_type: String,
    /// Company or person name.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub name: String,
    /// `company` or `person`.
    #[autosurgeon(missing = "default_kind", hydrate = "crate::records::text::string")]
    pub kind: String,
    /// `A` to `D`.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub level: Option<String>,
    /// Industry.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub industry: Option<String>,
    /// Where the lead came from.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub source: Option<String>,
    /// Phone numbers as typed.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::list")]
    pub phones: Vec<String>,
    /// Email addresses.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::list")]
    pub emails: Vec<String>,
    /// Postal address.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub address: Option<String>,
    /// Free tags.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::list")]
    pub tags: Vec<String>,
    /// Notes, merged character by character so that two reps' typing both survive.
    #[autosurgeon(missing = "Default::default")]
    pub notes: Text,
    /// The people at this customer.
    #[autosurgeon(missing = "Default::default")]
    pub contacts: Vec<Contact>,
    /// Owner, pool state, who and when: written by the server only.
    #[autosurgeon(missing = "Default::default")]
    pub server: ServerFields,
}

/// A person at a customer. Identified by `id`, so that concurrent edits to different contacts,
/// and inserts and deletes, merge by identity rather than by position.
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate)]
pub struct Contact {
    /// Stable id, chosen by whoever adds the contact (a UUID).
    #[key]
    #[autosurgeon(hydrate = "crate::records::text::string")]
    pub id: String,
    /// Name.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::string")]
    pub name: String,
    /// Job title.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub title: Option<String>,
    /// Phone numbers.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::list")]
    pub phones: Vec<String>,
    /// Email addresses.
    #[autosurgeon(missing = "Default::default", hydrate = "crate::records::text::list")]
    pub emails: Vec<String>,
}

fn kind_name() -> String {
    Customer::KIND.into()
}

fn default_kind() -> String {
    "company".into()
}

impl Customer {
    /// A new company customer with just a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            record_type: Self::KIND.into(),
            name: name.into(),
            kind: default_kind(),
            level: None,
            industry: None,
            source: None,
            phones: Vec::new(),
            emails: Vec::new(),
            address: None,
            tags: Vec::new(),
            notes: Text::default(),
            contacts: Vec::new(),
            server: ServerFields::default(),
        }
    }
}

impl RecordType for Customer {
    const KIND: &'static str = "customer";

    fn validate(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        rules::one_of(&mut out, "type", &self.record_type, &[Self::KIND]);
        rules::required(&mut out, "name", &self.name, Limits::NAME);
        rules::one_of(&mut out, "kind", &self.kind, &KINDS);
        if let Some(level) = &self.level {
            rules::one_of(&mut out, "level", level, &LEVELS);
        }
        rules::optional(
            &mut out,
            "industry",
            self.industry.as_deref(),
            Limits::SHORT,
        );
        rules::optional(&mut out, "source", self.source.as_deref(), Limits::SHORT);
        rules::list(
            &mut out,
            "phones",
            &self.phones,
            Limits::LIST,
            Limits::PHONE,
        );
        rules::list(
            &mut out,
            "emails",
            &self.emails,
            Limits::LIST,
            Limits::EMAIL,
        );
        rules::optional(
            &mut out,
            "address",
            self.address.as_deref(),
            Limits::ADDRESS,
        );
        rules::list(&mut out, "tags", &self.tags, Limits::TAGS, Limits::SHORT);
        rules::optional(&mut out, "notes", Some(self.notes.as_str()), Limits::TEXT);
        if self.contacts.len() > Limits::CONTACTS {
            out.push(Violation::new(
                "contacts",
                format!("must have at most {} items", Limits::CONTACTS),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, contact) in self.contacts.iter().enumerate() {
            let at = format!("contacts[{i}]");
            rules::required(&mut out, &format!("{at}.id"), &contact.id, Limits::SHORT);
            if !ids.insert(contact.id.as_str()) {
                out.push(Violation::new(
                    format!("{at}.id"),
                    "is used by another contact",
                ));
            }
            rules::required(&mut out, &format!("{at}.name"), &contact.name, Limits::NAME);
            rules::optional(
                &mut out,
                &format!("{at}.title"),
                contact.title.as_deref(),
                Limits::SHORT,
            );
            rules::list(
                &mut out,
                &format!("{at}.phones"),
                &contact.phones,
                Limits::LIST,
                Limits::PHONE,
            );
            rules::list(
                &mut out,
                &format!("{at}.emails"),
                &contact.emails,
                Limits::LIST,
                Limits::EMAIL,
            );
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
        c.restore("name", &mut fixed.name, &previous.name);
        c.restore("kind", &mut fixed.kind, &previous.kind);
        c.restore("level", &mut fixed.level, &previous.level);
        c.restore("industry", &mut fixed.industry, &previous.industry);
        c.restore("source", &mut fixed.source, &previous.source);
        c.restore("phones", &mut fixed.phones, &previous.phones);
        c.restore("emails", &mut fixed.emails, &previous.emails);
        c.restore("address", &mut fixed.address, &previous.address);
        c.restore("tags", &mut fixed.tags, &previous.tags);
        c.restore("notes", &mut fixed.notes, &previous.notes);
        c.restore("contacts", &mut fixed.contacts, &previous.contacts);
        let mut corrections = c.finish();
        super::keep_server_fields(&mut fixed.server, &previous.server, &mut corrections);
        (fixed, corrections)
    }
}
