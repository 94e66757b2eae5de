//! The body of an import's dry run, in either form a client sends a file: a JSON object with
//! the file base64-encoded (scripts), or a `multipart/form-data` form (a browser's file input,
//! `curl -F file=@customers.xlsx`).

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use base64::Engine;

use super::files::FileFormat;
use super::import::ImportRequest;
use crate::error::ApiError;
use crate::platform::http::ApiJson;
use crate::platform::http::extract::{media_type, parse_json};

/// An import's file and options, however they came.
#[derive(Debug)]
pub struct ImportUpload {
    /// `csv` or `xlsx`.
    pub format: FileFormat,
    /// The file itself.
    pub bytes: Vec<u8>,
    /// Where the file was in the request (`content_base64` or `file`), for errors about it.
    pub file_field: &'static str,
    /// Header → field, as in [`ImportRequest::mapping`].
    pub mapping: BTreeMap<String, String>,
    /// The pool the imported customers belong to.
    pub pool_id: Option<String>,
    /// Import rows that look like existing customers too.
    pub allow_duplicates: bool,
}

/// The parts a form may hold; anything else is refused, as unknown JSON fields are.
const FORM_PARTS: [&str; 5] = ["file", "format", "mapping", "pool_id", "allow_duplicates"];

impl<S: Send + Sync> FromRequest<S> for ImportUpload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if media_type(&req).as_deref() == Some("multipart/form-data") {
            let form = Multipart::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("not a readable form: {e}")))?;
            return from_form(form).await;
        }
        let ApiJson(body) = ApiJson::<ImportRequest>::from_request(req, state).await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.content_base64.trim())
            .map_err(|_| ApiError::invalid_field("content_base64", "is not base64"))?;
        Ok(Self {
            format: body.format,
            bytes,
            file_field: "content_base64",
            mapping: body.mapping,
            pool_id: body.pool_id,
            allow_duplicates: body.allow_duplicates,
        })
    }
}

/// Reads the parts of an upload form: `file` (required; its name's extension gives the format
/// unless a `format` part names it), and the optional `format`, `mapping` (a JSON object),
/// `pool_id` and `allow_duplicates` (`true` or `false`).
async fn from_form(mut form: Multipart) -> Result<ImportUpload, ApiError> {
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(0)
        } else {
            ApiError::BadRequest(format!("not a readable form: {e}"))
        }
    };
    let mut file: Option<(Option<String>, Vec<u8>)> = None;
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    while let Some(part) = form.next_field().await.map_err(unreadable)? {
        let name = part.name().unwrap_or_default().to_string();
        if !FORM_PARTS.contains(&name.as_str()) {
            return Err(ApiError::invalid_field(
                &name,
                format!(
                    "is not a part of an import form ({})",
                    FORM_PARTS.join(", ")
                ),
            ));
        }
        if (file.is_some() && name == "file") || texts.contains_key(&name) {
            return Err(ApiError::invalid_field(&name, "is given twice"));
        }
        if name == "file" {
            let file_name = part.file_name().map(str::to_string);
            let bytes = part.bytes().await.map_err(unreadable)?;
            file = Some((file_name, bytes.to_vec()));
        } else {
            let text = part.text().await.map_err(unreadable)?;
            texts.insert(name, text);
        }
    }
    let Some((file_name, bytes)) = file else {
        return Err(ApiError::invalid_field("file", "is missing"));
    };
    let format = match texts.get("format").map(|f| f.trim().to_ascii_lowercase()) {
        Some(named) => FileFormat::from_extension(&named)
            .ok_or_else(|| ApiError::invalid_field("format", "must be `csv` or `xlsx`"))?,
        None => file_name
            .as_deref()
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, extension)| FileFormat::from_extension(&extension.to_ascii_lowercase()))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "format",
                    "is missing, and the file's name does not end in .csv or .xlsx",
                )
            })?,
    };
    let mapping = match texts.get("mapping") {
        Some(json) => parse_json::<BTreeMap<String, String>>(json.as_bytes()).map_err(|_| {
            ApiError::invalid_field("mapping", "must be a JSON object of header to field")
        })?,
        None => BTreeMap::new(),
    };
    let allow_duplicates = match texts.get("allow_duplicates").map(|v| v.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "allow_duplicates",
                "must be `true` or `false`",
            ));
        }
    };
    Ok(ImportUpload {
        format,
        bytes,
        file_field: "file",
        mapping,
        pool_id: texts
            .get("pool_id")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()),
        allow_duplicates,
    })
}
