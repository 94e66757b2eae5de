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
    /// Unified social credit code (统一社会信用代码) of a company: 18 characters with a check
    /// character, the strongest duplicate signal there is.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub credit_code: Option<String>,
    /// Owner, pool state, who and when: written by the server only.
    #[autosurgeon(missing = "Default::default")]
    pub server: ServerFields,
    /// Which pool the customer belongs to, since when its owner has it, who had it before, and
    /// what it was merged into: written by the server only, through the pool and merge commands.
    #[autosurgeon(missing = "Default::default")]
    pub custody: Custody,
}

/// The server-owned custody of a customer: its public pool and its history of hands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Reconcile, Hydrate)]
pub struct Custody {
    /// The pool the customer returns to (and sits in while unowned).
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub pool: Option<String>,
    /// When the current owner got it (RFC 3339 UTC); the pool's return rules count from here.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub owned_since: Option<String>,
    /// The owner before the last release or return, for the pool's cool-down.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub previous_owner: Option<String>,
    /// When it last went back to the pool (RFC 3339 UTC).
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub released_at: Option<String>,
    /// The customer this one was merged into; set on the tombstone a merge leaves.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub merged_into: Option<String>,
    /// The last change of hands: `create`, `claim`, `assign`, `transfer`, `release`, `return`,
    /// `merge`, `unmerge`. Each new one becomes an entry of the customer's history.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub action: Option<String>,
    /// Why (a release's reason, the rule that returned it).
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub reason: Option<String>,
    /// Who made the last change of hands (absent: the server's own sweep).
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub changed_by: Option<String>,
    /// When (RFC 3339 UTC); identifies the change, so it is recorded once.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub changed_at: Option<String>,
}

impl Custody {
    /// The fields by name, for [`super::put_changed`].
    pub fn text_fields(&self) -> super::TextFields<'_, 9> {
        let Self {
            pool,
            owned_since,
            previous_owner,
            released_at,
            merged_into,
            action,
            reason,
            changed_by,
            changed_at,
        } = self;
        [
            ("pool", pool.as_deref()),
            ("owned_since", owned_since.as_deref()),
            ("previous_owner", previous_owner.as_deref()),
            ("released_at", released_at.as_deref()),
            ("merged_into", merged_into.as_deref()),
            ("action", action.as_deref()),
            ("reason", reason.as_deref()),
            ("changed_by", changed_by.as_deref()),
            ("changed_at", changed_at.as_deref()),
        ]
    }
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
            credit_code: None,
            server: ServerFields::default(),
            custody: Custody::default(),
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
        if let Some(code) = &self.credit_code
            && !credit_code_is_valid(code)
        {
            out.push(Violation::new(
                "credit_code",
                "is not a valid unified social credit code",
            ));
        }
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
        c.restore("credit_code", &mut fixed.credit_code, &previous.credit_code);
        let mut corrections = c.finish();
        super::keep_server_fields(&mut fixed.server, &previous.server, &mut corrections);
        if fixed.custody != previous.custody {
            fixed.custody = previous.custody.clone();
            corrections.push(Violation::new("custody", "is written by the server only"));
        }
        (fixed, corrections)
    }

    /// Commands and the pool sweep change only `server` and `custody`: those two are
    /// reconciled alone.
    fn reconcile_change(
        &self,
        before: &Self,
        doc: &mut automerge::AutoCommit,
    ) -> Result<(), autosurgeon::ReconcileError> {
        let mut rest = self.clone();
        rest.server = before.server.clone();
        rest.custody = before.custody.clone();
        if rest != *before {
            return autosurgeon::reconcile(doc, self);
        }
        super::reconcile_text_map(
            doc,
            "server",
            before.server.text_fields(),
            self.server.text_fields(),
            &self.server,
        )?;
        super::reconcile_text_map(
            doc,
            "custody",
            before.custody.text_fields(),
            self.custody.text_fields(),
            &self.custody,
        )
    }
}

/// The characters of a unified social credit code (GB 32100-2015): digits and capital letters
/// without I, O, Z, S, V; a character's value is its position here.
const CREDIT_CODE_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
/// The weights of the first 17 characters.
const CREDIT_CODE_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Whether `code` is a well-formed unified social credit code: 18 characters of the alphabet
/// whose last one is the GB 32100-2015 check character (mod 31) of the first 17.
pub fn credit_code_is_valid(code: &str) -> bool {
    let values: Option<Vec<u32>> = code
        .chars()
        .map(|c| {
            CREDIT_CODE_ALPHABET
                .find(c)
                .and_then(|i| u32::try_from(i).ok())
        })
        .collect();
    let Some(values) = values else {
        return false;
    };
    if values.len() != 18 {
        return false;
    }
    let sum: u32 = values
        .iter()
        .zip(CREDIT_CODE_WEIGHTS)
        .map(|(v, w)| v * w)
        .sum();
    let check = (31 - sum % 31) % 31;
    values[17] == check
}
