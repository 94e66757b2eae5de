//! Importing customers from CSV and XLSX. A dry run parses the file through a column mapping,
//! checks every row with the same rules as any customer, looks for duplicates (against the
//! company's customers and earlier rows of the same file) and keeps the result; the commit then
//! creates the customers through the sync engine in batches. A batch is all-or-nothing: if a row
//! of it fails the re-check at commit time, none of the batch is created and the report says
//! why. Each row's document id is derived from the import and the row, so a commit interrupted
//! by a crash is finished by asking again, never doubled.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{DefaultBodyLimit, State};
use chrono::{DateTime, Utc};
use outpost_mobile::api::{FieldError, Problem};
use outpost_mobile::records::RecordType;
use outpost_mobile::records::customer::{Contact, Customer as Document};
use outpost_sync::DocumentId;
use serde::{Deserialize, Serialize};
use surrealdb::types::SurrealValue;
use utoipa::ToSchema;

use super::duplicates::{self, Candidate, Probe};
use super::files::{self, FileFormat};
use super::upload::ImportUpload;
use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::author;
use crate::error::ApiError;
use crate::platform::db::Query;
use crate::platform::ids;

/// Rows per all-or-nothing batch.
pub const BATCH_ROWS: usize = 500;
/// Customers created concurrently within a batch (their commits share group transactions).
const PARALLEL_CREATES: usize = 32;

/// The fields a column can map to.
pub const FIELDS: [&str; 15] = [
    "name",
    "kind",
    "level",
    "industry",
    "source",
    "phones",
    "emails",
    "address",
    "tags",
    "notes",
    "credit_code",
    "contact_name",
    "contact_title",
    "contact_phone",
    "contact_email",
];

/// Headers recognized without a mapping, besides the field names themselves.
const KNOWN_HEADERS: [(&str, &str); 20] = [
    ("客户名称", "name"),
    ("名称", "name"),
    ("公司名称", "name"),
    ("类型", "kind"),
    ("级别", "level"),
    ("客户级别", "level"),
    ("行业", "industry"),
    ("来源", "source"),
    ("电话", "phones"),
    ("手机", "phones"),
    ("邮箱", "emails"),
    ("地址", "address"),
    ("标签", "tags"),
    ("备注", "notes"),
    ("统一社会信用代码", "credit_code"),
    ("联系人", "contact_name"),
    ("职务", "contact_title"),
    ("联系人电话", "contact_phone"),
    ("联系人邮箱", "contact_email"),
    ("doc_id", "ignore"),
];

/// `POST /api/v1/customers/imports`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// `csv` or `xlsx`.
    pub format: FileFormat,
    /// The file, base64-encoded.
    pub content_base64: String,
    /// Header → field (one of the import fields, or `ignore`); headers that are field names or
    /// common Chinese headers (客户名称, 电话, ...) map themselves.
    #[serde(default)]
    pub mapping: BTreeMap<String, String>,
    /// The pool the imported customers belong to.
    pub pool_id: Option<String>,
    /// Import rows that look like existing customers too.
    #[serde(default)]
    pub allow_duplicates: bool,
}

/// `POST /api/v1/customers/imports` as an upload form (`multipart/form-data`).
/// It only describes the form in the OpenAPI document; [`ImportUpload`] reads it.
#[derive(Debug, ToSchema)]
pub struct ImportForm {
    /// The CSV or XLSX file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// `csv` or `xlsx`; needed only when the file's name does not end in `.csv` or `.xlsx`.
    pub format: Option<FileFormat>,
    /// Header → field as a JSON object, as in the JSON form.
    pub mapping: Option<String>,
    /// The pool the imported customers belong to.
    pub pool_id: Option<String>,
    /// `true` to import rows that look like existing customers too.
    pub allow_duplicates: Option<bool>,
}

/// One bad row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RowError {
    /// The row number in the file (the header is row 1).
    pub row: usize,
    /// What is wrong with it.
    pub errors: Vec<FieldError>,
}

/// One row that looks like a customer that exists (or an earlier row of the file).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RowDuplicate {
    /// The row number in the file.
    pub row: usize,
    /// Existing customers it matches.
    pub candidates: Vec<Candidate>,
    /// An earlier row of the file it matches.
    pub same_as_row: Option<usize>,
}

/// What a dry run found, and after a commit what it did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// The import's id, for the commit.
    pub import_id: String,
    /// `dry_run`, `committed` or `partly_committed`.
    pub status: String,
    /// Data rows in the file.
    pub total_rows: usize,
    /// Rows that would be (or were) imported.
    pub importable_rows: usize,
    /// Header → field, as applied.
    pub mapping: BTreeMap<String, String>,
    /// Rows with errors (never imported).
    pub errors: Vec<RowError>,
    /// Likely duplicates (imported only with `allow_duplicates`).
    pub duplicates: Vec<RowDuplicate>,
    /// Customers created by the commit.
    pub created: usize,
    /// Batches refused at commit, with why.
    pub failed_batches: Vec<String>,
}

/// A row re-checked at commit: its id and document, and why it may not be created (if so).
type Checked = ((DocumentId, Document), Option<String>);

/// One row ready to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReadyRow {
    row: usize,
    fields: HashMap<String, String>,
}

#[derive(Debug, SurrealValue)]
struct ImportRow {
    by: String,
    rows: Vec<serde_json::Value>,
    report: serde_json::Value,
    status: String,
    created_at: DateTime<Utc>,
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split([';', '；', ',', '，', '、', '/', '\n'])
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn document_of(
    fields: &HashMap<String, String>,
    pool: Option<&str>,
    now: DateTime<Utc>,
) -> Document {
    let get = |k: &str| {
        fields
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut doc = Document::new(get("name").unwrap_or_default());
    if let Some(kind) = get("kind") {
        doc.kind = match kind.as_str() {
            "公司" | "企业" => "company".into(),
            "个人" => "person".into(),
            other => other.to_lowercase(),
        };
    }
    doc.level = get("level").map(|l| l.to_uppercase());
    doc.industry = get("industry");
    doc.source = get("source");
    doc.phones = get("phones").map(|v| split_list(&v)).unwrap_or_default();
    doc.emails = get("emails").map(|v| split_list(&v)).unwrap_or_default();
    doc.address = get("address");
    doc.tags = get("tags").map(|v| split_list(&v)).unwrap_or_default();
    doc.notes = autosurgeon::Text::with_value(get("notes").unwrap_or_default());
    doc.credit_code = get("credit_code").map(|c| c.to_uppercase());
    if let Some(name) = get("contact_name") {
        doc.contacts.push(Contact {
            id: ids::new_key(),
            name,
            title: get("contact_title"),
            phones: get("contact_phone")
                .map(|v| split_list(&v))
                .unwrap_or_default(),
            emails: get("contact_email")
                .map(|v| split_list(&v))
                .unwrap_or_default(),
        });
    }
    if let Some(pool) = pool {
        doc.custody.pool = Some(pool.to_string());
        doc.custody.owned_since = Some(now.to_rfc3339());
    }
    doc
}

/// Parses, maps and checks the file; stores the outcome for the commit. The file comes as JSON
/// (base64) or as a `multipart/form-data` upload with a `file` part and the same options as
/// parts (`format` when the file's name does not say, `mapping` as JSON, `pool_id`,
/// `allow_duplicates`).
#[utoipa::path(post, path = "/api/v1/customers/imports", tag = "customers",
    request_body(content(
        (ImportRequest = "application/json"),
        (ImportForm = "multipart/form-data"),
    )),
    responses((status = 201, body = ImportReport, description = "The dry run's report"), (status = 403, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn dry_run(
    State(state): State<AppState>,
    actor: Actor,
    body: ImportUpload,
) -> Result<(axum::http::StatusCode, axum::Json<ImportReport>), ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let table = files::read_table(body.format, &body.bytes)
        .map_err(|e| ApiError::invalid_field(body.file_field, e.to_string()))?;
    if let Some(pool) = &body.pool_id {
        crate::crm::pool::require_pool(&state, pool, "pool_id").await?;
    }
    // The mapping: given, else by name.
    let mut mapping = BTreeMap::new();
    let mut mapping_errors = Vec::new();
    for header in &table.headers {
        let field = body.mapping.get(header).cloned().or_else(|| {
            let lower = header.trim().to_lowercase();
            FIELDS
                .iter()
                .find(|f| **f == lower)
                .map(|f| f.to_string())
                .or_else(|| {
                    KNOWN_HEADERS
                        .iter()
                        .find(|(h, _)| *h == header.trim())
                        .map(|(_, f)| f.to_string())
                })
        });
        match field {
            Some(f) if f == "ignore" || FIELDS.contains(&f.as_str()) => {
                mapping.insert(header.clone(), f);
            }
            Some(f) => mapping_errors.push(FieldError {
                field: format!("mapping.{header}"),
                message: format!("`{f}` is not an import field"),
            }),
            None => {
                mapping.insert(header.clone(), "ignore".into());
            }
        }
    }
    for header in body.mapping.keys() {
        if !table.headers.contains(header) {
            mapping_errors.push(FieldError {
                field: format!("mapping.{header}"),
                message: "no such column in the file".into(),
            });
        }
    }
    if !mapping.values().any(|f| f == "name") {
        mapping_errors.push(FieldError {
            field: "mapping".into(),
            message: "no column maps to `name`".into(),
        });
    }
    if !mapping_errors.is_empty() {
        return Err(ApiError::Validation(mapping_errors));
    }
    let now = state.clock.now();
    let import_id = ids::new_key();
    let mut report = ImportReport {
        import_id: import_id.clone(),
        status: "dry_run".into(),
        total_rows: table.rows.len(),
        mapping: mapping.clone(),
        ..ImportReport::default()
    };
    let mut ready: Vec<ReadyRow> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, cells) in table.rows.iter().enumerate() {
        let row = index + 2;
        let mut fields: HashMap<String, String> = HashMap::new();
        for (header, cell) in table.headers.iter().zip(cells) {
            if let Some(field) = mapping.get(header).filter(|f| *f != "ignore") {
                let entry = fields.entry(field.clone()).or_default();
                if !entry.is_empty() && !cell.is_empty() {
                    entry.push(';');
                }
                entry.push_str(cell);
            }
        }
        let doc = document_of(&fields, body.pool_id.as_deref(), now);
        let violations = doc.validate();
        if !violations.is_empty() {
            report.errors.push(RowError {
                row,
                errors: violations
                    .into_iter()
                    .map(|v| FieldError {
                        field: v.field,
                        message: v.message,
                    })
                    .collect(),
            });
            continue;
        }
        let probe = Probe::of(&doc);
        let mut keys: Vec<String> = probe
            .phone_keys
            .iter()
            .map(|k| format!("p:{k}"))
            .chain(probe.email_keys.iter().map(|k| format!("e:{k}")))
            .chain(probe.credit_code.iter().map(|k| format!("c:{k}")))
            .collect();
        if probe.company_key.chars().count() >= 2 {
            keys.push(format!("n:{}", probe.company_key));
        }
        let same_as_row = keys.iter().find_map(|k| seen.get(k).copied());
        let candidates = duplicates::for_actor(
            duplicates::candidates(&state.db, &probe, None).await?,
            &actor,
        );
        if same_as_row.is_some() || !candidates.is_empty() {
            report.duplicates.push(RowDuplicate {
                row,
                candidates,
                same_as_row,
            });
            if !body.allow_duplicates {
                continue;
            }
        }
        for k in keys {
            seen.entry(k).or_insert(row);
        }
        ready.push(ReadyRow { row, fields });
    }
    report.importable_rows = ready.len();
    Query::new(
        "CREATE $import SET by = $by, rows = $rows, report = $report, status = 'dry_run', created_at = time::now(), committed_at = NONE",
    )
    .bind("import", ids::record("customer_import", &import_id))
    .bind("by", actor.user_id.clone())
    .bind(
        "rows",
        ready
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect::<Vec<_>>(),
    )
    .bind(
        "report",
        serde_json::json!({ "report": report, "pool_id": body.pool_id, "allow_duplicates": body.allow_duplicates }),
    )
    .run(&state.db)
    .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(report)))
}

/// Creates the customers of a dry run, batch by batch. Asking again after a crash finishes
/// it; asking again after it finished answers with the same report.
#[utoipa::path(post, path = "/api/v1/customers/imports/{import_id}/commit", tag = "customers",
    params(("import_id" = String, Path, description = "The dry run's id")),
    responses((status = 200, body = ImportReport), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn commit(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(import_id): axum::extract::Path<String>,
) -> Result<axum::Json<ImportReport>, ApiError> {
    // The commit runs in its own task: if the request times out, the import goes on, and
    // asking again reports (or finishes) it.
    tokio::spawn(run_commit(state, actor, import_id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(axum::Json)
}

/// The commit itself.
async fn run_commit(
    state: AppState,
    actor: Actor,
    import_id: String,
) -> Result<ImportReport, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    if uuid::Uuid::try_parse(&import_id).is_err() {
        return Err(ApiError::InvalidId(import_id.chars().take(64).collect()));
    }
    let row: Option<ImportRow> = state.db.get("customer_import", &import_id).await?;
    let row = row
        .filter(|r| r.by == actor.user_id)
        .ok_or(ApiError::NotFound("import"))?;
    let saved: serde_json::Value = row.report;
    let mut report: ImportReport =
        serde_json::from_value(saved["report"].clone()).unwrap_or_default();
    if row.status == "committed" {
        return Ok(report);
    }
    let pool = saved["pool_id"].as_str().map(str::to_string);
    let allow_duplicates = saved["allow_duplicates"].as_bool().unwrap_or(false);
    let rows: Vec<ReadyRow> = row
        .rows
        .into_iter()
        .filter_map(|r| serde_json::from_value(r).ok())
        .collect();
    let now = state.clock.now();
    let author = author(&actor);
    report.created = 0;
    report.failed_batches.clear();
    for batch in rows.chunks(BATCH_ROWS) {
        // Re-check the batch as it stands now: a duplicate may have appeared since the dry run.
        use futures_util::StreamExt;
        let own_ids: std::sync::Arc<std::collections::HashSet<String>> = rows
            .iter()
            .map(|r| DocumentId::derived(&format!("import:{import_id}:{}", r.row)).to_string())
            .collect::<std::collections::HashSet<String>>()
            .into();
        let checked: Vec<Result<Checked, ApiError>> = futures_util::stream::iter(batch.to_vec())
            .map(|ready| {
                let (state, pool, own_ids, import_id) = (
                    state.clone(),
                    pool.clone(),
                    own_ids.clone(),
                    import_id.clone(),
                );
                async move {
                    let id = DocumentId::derived(&format!("import:{import_id}:{}", ready.row));
                    let doc = document_of(&ready.fields, pool.as_deref(), now);
                    let mut refusal = None;
                    if !allow_duplicates {
                        let found =
                            duplicates::candidates(&state.db, &Probe::of(&doc), Some(id.as_str()))
                                .await?;
                        // Rows created by an earlier, interrupted run of this commit are
                        // not duplicates of themselves.
                        if let Some(first) = found.iter().find(|c| !own_ids.contains(&c.doc_id)) {
                            refusal = Some(format!(
                                "row {} now matches existing customer {}",
                                ready.row, first.doc_id
                            ));
                        }
                    }
                    Ok(((id, doc), refusal))
                }
            })
            .buffered(PARALLEL_CREATES)
            .collect()
            .await;
        let mut docs = Vec::with_capacity(batch.len());
        let mut refusal: Option<String> = None;
        for result in checked {
            let (doc, why) = result?;
            if refusal.is_none() {
                refusal = why;
            }
            docs.push(doc);
        }
        if let Some(why) = refusal {
            report.failed_batches.push(format!(
                "rows {} to {}: {why}",
                batch.first().map_or(0, |r| r.row),
                batch.last().map_or(0, |r| r.row)
            ));
            continue;
        }
        let results: Vec<Result<bool, outpost_sync::ChangeError>> =
            futures_util::stream::iter(docs)
                .map(|(id, doc)| {
                    let (state, author) = (state.clone(), author.clone());
                    async move {
                        state
                            .sync
                            .create_as(&author, &id, doc)
                            .await
                            .map(|created| created.is_some())
                    }
                })
                .buffer_unordered(PARALLEL_CREATES)
                .collect()
                .await;
        for result in results {
            match result {
                Ok(_) => report.created += 1,
                Err(e) => return Err(crate::crm::records::change_error("customer", e)),
            }
        }
    }
    report.status = if report.failed_batches.is_empty() {
        "committed".into()
    } else {
        "partly_committed".into()
    };
    Query::new(
        "UPDATE $import SET status = $status, report = object::extend(report, { report: $report }), committed_at = time::now()",
    )
    .bind("import", ids::record("customer_import", &import_id))
    .bind("status", report.status.clone())
    .bind("report", serde_json::to_value(&report).unwrap_or_default())
    .run(&state.db)
    .await?;
    crate::platform::audit::record(
        &state.db,
        &actor.audit(),
        "customer.import",
        None,
        serde_json::json!({ "import_id": import_id, "created": report.created, "failed_batches": report.failed_batches.len() }),
    )
    .await?;
    Ok(report)
}

/// The body limit of the import route (`server.max_import_bytes`).
pub fn body_limit(max_import_bytes: usize) -> DefaultBodyLimit {
    DefaultBodyLimit::max(max_import_bytes)
}
