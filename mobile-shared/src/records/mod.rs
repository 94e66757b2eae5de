//! Synced record types: each is one automerge document per aggregate root, typed with
//! autosurgeon, with the field rules that both the phone and the server run.
//!
//! Adding a type is one module: its document struct (`Reconcile` + `Hydrate`), its
//! [`RecordType`] implementation (kind name, validation, server-owned fields), and, on the
//! server, its projection. Nothing else in the sync engine is type-specific.

pub mod customer;
pub mod event;
pub mod follow_up;
pub mod read;
pub mod rules;
pub mod task;
pub mod text;

use autosurgeon::{Hydrate, Reconcile};

pub use rules::{Limits, Violation};

/// Puts the server-owned fields back as they were, recording the correction when a device
/// changed them. Every record type's `correct` ends with this.
pub fn keep_server_fields(
    fixed: &mut ServerFields,
    previous: &ServerFields,
    corrections: &mut Vec<Violation>,
) {
    if fixed != previous {
        *fixed = previous.clone();
        corrections.push(Violation::new("server", "is written by the server only"));
    }
}

/// A new, empty document set up the way the record types need: text positions counted in
/// UTF-8 bytes, which is how autosurgeon's `Text` records its edits. (The encoding only changes
/// how indexes are read through this handle, never what is stored, so JavaScript clients that
/// count UTF-16 units interoperate.)
pub fn new_document() -> automerge::AutoCommit {
    automerge::AutoCommit::new_with_encoding(automerge::TextEncoding::Utf8CodeUnit)
}

/// Loads saved document bytes with the same settings as [`new_document`].
pub fn load_document(bytes: &[u8]) -> Result<automerge::AutoCommit, automerge::AutomergeError> {
    automerge::AutoCommit::load_with_options(
        bytes,
        automerge::LoadOptions::new().text_encoding(automerge::TextEncoding::Utf8CodeUnit),
    )
}

/// Sets a text field to `target` with one splice covering only what differs (common prefix and
/// suffix kept), in time linear in the length: concurrent edits elsewhere in the text survive a
/// merge, and long texts never go through a quadratic diff.
pub fn set_text(value: &mut autosurgeon::Text, target: &str) {
    let current = value.as_str().to_string();
    if current == target {
        return;
    }
    let prefix: usize = current
        .char_indices()
        .zip(target.chars())
        .take_while(|((_, a), b)| a == b)
        .last()
        .map_or(0, |((i, a), _)| i + a.len_utf8());
    let suffix: usize = current[prefix..]
        .chars()
        .rev()
        .zip(target[prefix..].chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum();
    let removed = current.len() - prefix - suffix;
    let inserted = &target[prefix..target.len() - suffix];
    value.splice(prefix, removed as isize, inserted);
}

/// The record type a document declares in its root `type` field (`None` when it has none).
pub fn kind_of<D: autosurgeon::ReadDoc>(doc: &D) -> Option<String> {
    text::string(doc, &automerge::ROOT, autosurgeon::Prop::Key("type".into()))
        .ok()
        .filter(|kind| !kind.is_empty())
}

/// Re-bases one text field: `value` keeps its content but becomes an edit of `base`.
pub fn rebase(value: &mut autosurgeon::Text, base: &autosurgeon::Text) {
    let content = value.as_str().to_string();
    *value = base.clone();
    set_text(value, &content);
}

/// A synced record type.
pub trait RecordType:
    Clone + PartialEq + Reconcile + Hydrate + std::fmt::Debug + Send + Sync + 'static
{
    /// The stable name of the type, e.g. `customer`; stored in the document's `type` field so
    /// any client can tell documents apart.
    const KIND: &'static str;

    /// Checks every field a device may edit; each problem names its field.
    fn validate(&self) -> Vec<Violation>;

    /// Makes `proposed` acceptable, given the last accepted state: server-owned fields are put
    /// back, and every field that fails validation returns to its previous value. Returns the
    /// corrected value and why each correction was made. A device never gets its message refused
    /// (that would make it resend forever); it gets a compensating change instead.
    fn correct(previous: &Self, proposed: &Self) -> (Self, Vec<Violation>);

    /// Makes every collaborative-text field of `self` an edit of `base`'s text (keeping `self`'s
    /// values), so that a value built from an older state of the document can be reconciled into
    /// a newer one.
    fn rebase_text(&mut self, base: &Self);

    /// The server-owned fields.
    fn server(&self) -> &ServerFields;

    /// The server-owned fields, for the server to set.
    fn server_mut(&mut self) -> &mut ServerFields;

    /// Writes `self` into `doc`, which holds `before`, with the same result as reconciling the
    /// whole record. When only the server-owned fields changed (a command, the pool sweep) only
    /// they are reconciled: a full reconcile reads every field of the document, which is most of
    /// the cost of such a change.
    fn reconcile_change(
        &self,
        before: &Self,
        doc: &mut automerge::AutoCommit,
    ) -> Result<(), autosurgeon::ReconcileError> {
        if self.server() != before.server() {
            let mut rest = self.clone();
            *rest.server_mut() = before.server().clone();
            if rest == *before {
                return reconcile_text_map(
                    doc,
                    "server",
                    before.server().text_fields(),
                    self.server().text_fields(),
                    self.server(),
                );
            }
        }
        autosurgeon::reconcile(doc, self)
    }
}

/// The fields every synced document carries and only the server writes.
#[derive(Debug, Clone, PartialEq, Eq, Reconcile, Hydrate)]
pub struct ServerFields {
    /// The owning user's id; `None` while in the public pool.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub owner: Option<String>,
    /// `owned`, `pool` or `deleted`.
    #[autosurgeon(missing = "default_state", hydrate = "crate::records::text::string")]
    pub state: String,
    /// Who created the record.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub created_by: Option<String>,
    /// Who changed it last.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub updated_by: Option<String>,
    /// When it was created, RFC 3339 UTC.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub created_at: Option<String>,
    /// When it was changed last, RFC 3339 UTC.
    #[autosurgeon(
        missing = "Default::default",
        hydrate = "crate::records::text::optional"
    )]
    pub updated_at: Option<String>,
}

impl Default for ServerFields {
    fn default() -> Self {
        Self {
            owner: None,
            state: default_state(),
            created_by: None,
            updated_by: None,
            created_at: None,
            updated_at: None,
        }
    }
}

/// A map of text fields by name, for [`put_changed`]; built by destructuring the struct
/// without `..`, so a new field cannot be left out.
pub type TextFields<'a, const N: usize> = [(&'static str, Option<&'a str>); N];

/// Writes into the map `key` of the document's root only those of its text fields that differ
/// between `before` and `after` (`None` as null, the way autosurgeon writes it), which is much
/// cheaper than reconciling the map. Returns false, writing nothing, when the document has no
/// such map; the caller then reconciles the whole value.
pub fn put_changed<const N: usize>(
    doc: &mut automerge::AutoCommit,
    key: &str,
    before: TextFields<'_, N>,
    after: TextFields<'_, N>,
) -> Result<bool, automerge::AutomergeError> {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ScalarValue, Value};
    let Some((Value::Object(ObjType::Map), map)) = doc.get(automerge::ROOT, key)? else {
        return Ok(false);
    };
    for ((field, old), (_, new)) in before.into_iter().zip(after) {
        if old != new {
            match new {
                Some(text) => doc.put(&map, field, text)?,
                None => doc.put(&map, field, ScalarValue::Null)?,
            }
        }
    }
    Ok(true)
}

/// Reconciles the map `key` of the document's root from `before` to `after` (the text fields
/// of `value`): only the changed fields when the map exists, else the whole value.
pub fn reconcile_text_map<const N: usize, R: Reconcile>(
    doc: &mut automerge::AutoCommit,
    key: &str,
    before: TextFields<'_, N>,
    after: TextFields<'_, N>,
    value: &R,
) -> Result<(), autosurgeon::ReconcileError> {
    if before != after && !put_changed(doc, key, before, after)? {
        autosurgeon::reconcile_prop(doc, automerge::ROOT, key, value)?;
    }
    Ok(())
}

impl ServerFields {
    /// The fields by name, for [`put_changed`].
    pub fn text_fields(&self) -> TextFields<'_, 6> {
        let Self {
            owner,
            state,
            created_by,
            updated_by,
            created_at,
            updated_at,
        } = self;
        [
            ("owner", owner.as_deref()),
            ("state", Some(state.as_str())),
            ("created_by", created_by.as_deref()),
            ("updated_by", updated_by.as_deref()),
            ("created_at", created_at.as_deref()),
            ("updated_at", updated_at.as_deref()),
        ]
    }

    /// The server fields of a record `user_id` creates now: owned by its creator.
    pub fn created_by(user_id: &str) -> Self {
        let now = timestamp_now();
        Self {
            owner: Some(user_id.to_string()),
            state: default_state(),
            created_by: Some(user_id.to_string()),
            updated_by: Some(user_id.to_string()),
            created_at: Some(now.clone()),
            updated_at: Some(now),
        }
    }
}

/// The current time as documents store it: RFC 3339 in UTC, to the millisecond.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn default_state() -> String {
    "owned".into()
}
