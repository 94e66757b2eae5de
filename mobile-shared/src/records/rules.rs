//! Field rules shared by every record type: lengths, list sizes, allowed values.

use serde::{Deserialize, Serialize};

/// One broken rule, or one correction the server made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Dotted path of the field, e.g. `contacts[2].name`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Size limits, in characters and items.
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    /// A short name.
    pub const NAME: usize = 200;
    /// A one-line value (industry, source, title).
    pub const SHORT: usize = 100;
    /// A phone number as typed.
    pub const PHONE: usize = 32;
    /// An email address.
    pub const EMAIL: usize = 254;
    /// A postal address or a location.
    pub const ADDRESS: usize = 500;
    /// Free text (notes, visit content).
    pub const TEXT: usize = 20_000;
    /// Phones, emails per record or contact.
    pub const LIST: usize = 10;
    /// Tags per record.
    pub const TAGS: usize = 30;
    /// Contacts per customer.
    pub const CONTACTS: usize = 200;
    /// Attachments per follow-up.
    pub const ATTACHMENTS: usize = 50;
}

/// Checks a required string.
pub fn required(out: &mut Vec<Violation>, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        out.push(Violation::new(field, "must not be empty"));
    } else {
        optional(out, field, Some(value), max);
    }
}

/// Checks an optional string.
pub fn optional(out: &mut Vec<Violation>, field: &str, value: Option<&str>, max: usize) {
    if let Some(value) = value {
        if value.chars().count() > max {
            out.push(Violation::new(
                field,
                format!("must be at most {max} characters"),
            ));
        } else if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            out.push(Violation::new(field, "must not contain control characters"));
        }
    }
}

/// Checks a list of strings.
pub fn list(
    out: &mut Vec<Violation>,
    field: &str,
    values: &[String],
    max_items: usize,
    max_len: usize,
) {
    if values.len() > max_items {
        out.push(Violation::new(
            field,
            format!("must have at most {max_items} items"),
        ));
    }
    for (i, value) in values.iter().enumerate() {
        required(out, &format!("{field}[{i}]"), value, max_len);
    }
}

/// Checks a value against a closed set.
pub fn one_of(out: &mut Vec<Violation>, field: &str, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        out.push(Violation::new(
            field,
            format!("must be one of {}", allowed.join(", ")),
        ));
    }
}

/// Checks an RFC 3339 timestamp.
pub fn timestamp(out: &mut Vec<Violation>, field: &str, value: Option<&str>) {
    if let Some(value) = value
        && chrono::DateTime::parse_from_rfc3339(value).is_err()
    {
        out.push(Violation::new(field, "must be an RFC 3339 timestamp"));
    }
}

/// Whether any violation concerns `field` or something inside it.
pub fn touches(violations: &[Violation], field: &str) -> bool {
    violations.iter().any(|v| {
        v.field == field
            || v.field.starts_with(&format!("{field}["))
            || v.field.starts_with(&format!("{field}."))
    })
}

/// Builds a record type's `correct`: every field a violation concerns goes back to its previous
/// value, and each correction is recorded with its reason.
pub struct Corrector {
    violations: Vec<Violation>,
    corrections: Vec<Violation>,
}

impl Corrector {
    /// A corrector for the violations of the proposed value.
    pub fn new(violations: Vec<Violation>) -> Self {
        Self {
            violations,
            corrections: Vec::new(),
        }
    }

    /// Puts `fixed` back to `previous` when a violation concerns `field`.
    pub fn restore<T: Clone>(&mut self, field: &str, fixed: &mut T, previous: &T) {
        let concerned: Vec<Violation> = self
            .violations
            .iter()
            .filter(|v| touches(std::slice::from_ref(*v), field))
            .cloned()
            .collect();
        if !concerned.is_empty() {
            *fixed = previous.clone();
            self.corrections.extend(concerned);
        }
    }

    /// Records a correction made by hand.
    pub fn push(&mut self, correction: Violation) {
        self.corrections.push(correction);
    }

    /// The corrections made.
    pub fn finish(self) -> Vec<Violation> {
        self.corrections
    }
}
