//! The bridge between untyped automerge documents and the typed record schemas: one [`Kind`]
//! per record type, so the engine validates any document without knowing its type.

use std::collections::HashMap;
use std::marker::PhantomData;

use automerge::AutoCommit;
use autosurgeon::reconcile;
use outpost_mobile::records::customer::Customer;
use outpost_mobile::records::event::Event;
use outpost_mobile::records::follow_up::FollowUp;
use outpost_mobile::records::read::hydrate;
use outpost_mobile::records::task::Task;
use outpost_mobile::records::{RecordType, ServerFields, Violation};

/// Why a document cannot be accepted at all.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The document does not have the shape of its type (e.g. a number where text belongs).
    #[error("the document is malformed: {0}")]
    Malformed(String),
    /// A new document that breaks the field rules; there is no earlier state to restore.
    #[error("the new document is invalid: {0:?}")]
    Invalid(Vec<Violation>),
}

/// What the engine needs to know about a record type.
pub trait Kind: Send + Sync {
    /// The type's name (`customer`, `follow_up`).
    fn name(&self) -> &'static str;

    /// Checks a proposed state against the accepted one (`None` for a new document) and, when
    /// something must be undone, writes the compensating change into `proposed` with whatever
    /// actor it has. For a new document, `initial` are the server fields to stamp on it.
    fn admit(
        &self,
        accepted: Option<&AutoCommit>,
        proposed: &mut AutoCommit,
        initial: &ServerFields,
    ) -> Result<Vec<Violation>, Rejection>;

    /// Undoes everything `proposed` changed relative to `accepted` (a peer that may read but
    /// not write), as a compensating change.
    fn restore(&self, accepted: &AutoCommit, proposed: &mut AutoCommit) -> Result<(), Rejection>;

    /// The server-owned fields of a document of this type.
    fn server_fields(&self, doc: &AutoCommit) -> Result<ServerFields, Rejection>;

    /// Sets the server-owned fields (an ownership change, a tombstone).
    fn set_server_fields(
        &self,
        doc: &mut AutoCommit,
        server: &ServerFields,
    ) -> Result<(), Rejection>;
}

struct Typed<T>(PhantomData<fn() -> T>);

fn malformed(e: impl std::fmt::Display) -> Rejection {
    Rejection::Malformed(e.to_string())
}

impl<T: RecordType> Kind for Typed<T> {
    fn name(&self) -> &'static str {
        T::KIND
    }

    fn admit(
        &self,
        accepted: Option<&AutoCommit>,
        proposed: &mut AutoCommit,
        initial: &ServerFields,
    ) -> Result<Vec<Violation>, Rejection> {
        let new: T = hydrate(proposed).map_err(malformed)?;
        let (fixed, corrections) = match accepted {
            Some(accepted) => {
                let previous: T = hydrate(accepted).map_err(malformed)?;
                T::correct(&previous, &new)
            }
            None => {
                let violations = new.validate();
                if !violations.is_empty() {
                    return Err(Rejection::Invalid(violations));
                }
                let mut fixed = new.clone();
                *fixed.server_mut() = initial.clone();
                (fixed, Vec::new())
            }
        };
        if fixed != new {
            let mut fixed = fixed;
            fixed.rebase_text(&new);
            reconcile(proposed, &fixed).map_err(malformed)?;
        }
        Ok(corrections)
    }

    fn restore(&self, accepted: &AutoCommit, proposed: &mut AutoCommit) -> Result<(), Rejection> {
        let mut previous: T = hydrate(accepted).map_err(malformed)?;
        let current: T = hydrate(proposed).map_err(malformed)?;
        previous.rebase_text(&current);
        reconcile(proposed, &previous).map_err(malformed)
    }

    fn server_fields(&self, doc: &AutoCommit) -> Result<ServerFields, Rejection> {
        let record: T = hydrate(doc).map_err(malformed)?;
        Ok(record.server().clone())
    }

    fn set_server_fields(
        &self,
        doc: &mut AutoCommit,
        server: &ServerFields,
    ) -> Result<(), Rejection> {
        let mut record: T = hydrate(doc).map_err(malformed)?;
        *record.server_mut() = server.clone();
        reconcile(doc, &record).map_err(malformed)
    }
}

/// Every synced record type, by name.
pub struct Kinds(HashMap<&'static str, Box<dyn Kind>>);

impl Default for Kinds {
    fn default() -> Self {
        let mut kinds = Kinds(HashMap::new());
        kinds.register::<Customer>();
        kinds.register::<FollowUp>();
        kinds.register::<Task>();
        kinds.register::<Event>();
        kinds
    }
}

impl Kinds {
    /// Adds a record type.
    pub fn register<T: RecordType>(&mut self) {
        self.0.insert(T::KIND, Box::new(Typed::<T>(PhantomData)));
    }

    /// The type named `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Kind> {
        self.0.get(name).map(|k| k.as_ref())
    }

    /// The type a document declares in its `type` field.
    pub fn of(&self, doc: &AutoCommit) -> Option<&dyn Kind> {
        self.get(&outpost_mobile::records::kind_of(doc)?)
    }
}
