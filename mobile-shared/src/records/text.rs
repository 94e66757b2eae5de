//! Strings that hydrate from either form a client may write: a scalar string (what Rust
//! clients and `ImmutableString` write) or a text object (what JavaScript clients write for every
//! plain string). Used with `#[autosurgeon(hydrate = "...")]` on string fields.

use automerge::{ObjId, ObjType, ScalarValue, Value};
use autosurgeon::{HydrateError, Prop, ReadDoc};

fn read<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    prop: Prop<'_>,
) -> Result<Option<Option<String>>, HydrateError> {
    let Some((value, id)) = doc.get(obj, &prop).map_err(HydrateError::from)? else {
        return Ok(None);
    };
    match value {
        Value::Scalar(scalar) => match scalar.as_ref() {
            ScalarValue::Str(s) => Ok(Some(Some(s.to_string()))),
            ScalarValue::Null => Ok(Some(None)),
            other => Err(HydrateError::unexpected("a string", format!("{other:?}"))),
        },
        Value::Object(ObjType::Text) => Ok(Some(Some(doc.text(&id).map_err(HydrateError::from)?))),
        Value::Object(other) => Err(HydrateError::unexpected(
            "a string",
            format!("a {other:?} object"),
        )),
    }
}

/// A required string (missing or null reads as empty).
pub fn string<D: ReadDoc>(doc: &D, obj: &ObjId, prop: Prop<'_>) -> Result<String, HydrateError> {
    Ok(read(doc, obj, prop)?.flatten().unwrap_or_default())
}

/// An optional string (missing or null reads as `None`).
pub fn optional<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    prop: Prop<'_>,
) -> Result<Option<String>, HydrateError> {
    Ok(read(doc, obj, prop)?.flatten())
}

/// A list of strings, each scalar or text.
pub fn list<D: ReadDoc>(doc: &D, obj: &ObjId, prop: Prop<'_>) -> Result<Vec<String>, HydrateError> {
    let Some((value, id)) = doc.get(obj, &prop).map_err(HydrateError::from)? else {
        return Ok(Vec::new());
    };
    match value {
        Value::Object(ObjType::List) => (0..doc.length(&id))
            .map(|i| string(doc, &id, Prop::Index(i as u32)))
            .collect(),
        Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Null) => Ok(Vec::new()),
        other => Err(HydrateError::unexpected(
            "a list of strings",
            format!("{other:?}"),
        )),
    }
}
