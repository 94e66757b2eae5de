//! What every synced record's routes share: who the author of a change is, how engine refusals
//! read as API errors, and document ids in paths.

use outpost_mobile::api::FieldError;
use outpost_sync::{Author, ChangeError, DocumentId, PeerIdentity};

use crate::crm::identity::access::Actor;
use crate::error::ApiError;

/// The author of a change made over HTTP.
pub fn author(actor: &Actor) -> Author {
    Author {
        identity: PeerIdentity {
            user_id: actor.user_id.clone(),
            device_id: actor.device_id.clone(),
        },
        channel: "api",
        request_id: actor.request_id.clone(),
    }
}

/// Maps an engine refusal to the API's error; `kind` names the record in a 404.
pub fn change_error(kind: &'static str, e: ChangeError) -> ApiError {
    match e {
        ChangeError::NotFound => ApiError::NotFound(kind),
        ChangeError::Invalid(violations) => ApiError::Validation(
            violations
                .into_iter()
                .map(|v| FieldError {
                    field: v.field,
                    message: v.message,
                })
                .collect(),
        ),
        ChangeError::Malformed(why) => ApiError::Internal(why),
        ChangeError::Storage(e) => ApiError::Internal(e.to_string()),
    }
}

/// A document id from a path: 400 unless it is one.
pub fn parse_doc_id(raw: &str) -> Result<DocumentId, ApiError> {
    DocumentId::parse(raw).ok_or_else(|| ApiError::InvalidId(raw.chars().take(64).collect()))
}

/// Tells "absent" (`None`) from "null" (`Some(None)`) in PATCH bodies.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// The current time as the documents store it.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
