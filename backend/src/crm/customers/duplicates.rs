//! Duplicate detection: a new or imported customer is checked against every live customer in
//! the company (not only the caller's scope: a duplicate in a colleague's hands or in the pool is
//! exactly what must be caught) by normalized phone, email, unified social credit code, and company
//! name without its legal suffix. Candidates tell who holds them, but nothing more of a customer
//! outside the caller's scope.

use axum::extract::State;
use outpost_mobile::api::Problem;
use outpost_mobile::records::customer::Customer as Document;
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::ToSchema;

use super::keys;
use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::error::ApiError;
use crate::platform::db::{Db, DbError, Query};
use crate::platform::http::ApiJson;
use crate::platform::ids;

/// What a customer is matched by.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Phone keys (see [`keys::phone_keys`]).
    pub phone_keys: Vec<String>,
    /// Lower-cased emails.
    pub email_keys: Vec<String>,
    /// Unified social credit code.
    pub credit_code: Option<String>,
    /// Company name without its suffix.
    pub company_key: String,
}

impl Probe {
    /// The match keys of a customer document (its own and its contacts' phones and emails).
    pub fn of(doc: &Document) -> Self {
        let mut phone_keys: Vec<String> = doc
            .phones
            .iter()
            .chain(doc.contacts.iter().flat_map(|c| c.phones.iter()))
            .flat_map(|p| keys::phone_keys(p))
            .collect();
        phone_keys.sort();
        phone_keys.dedup();
        let mut email_keys: Vec<String> = doc
            .emails
            .iter()
            .chain(doc.contacts.iter().flat_map(|c| c.emails.iter()))
            .map(|e| keys::email_key(e))
            .collect();
        email_keys.sort();
        email_keys.dedup();
        Self {
            phone_keys,
            email_keys,
            credit_code: doc.credit_code.clone(),
            // Two people called 王芳 are not the same customer; two companies called 星辰科技
            // likely are.
            company_key: if doc.kind == "company" {
                keys::company_key(&doc.name)
            } else {
                String::new()
            },
        }
    }
}

/// An existing customer a new one may duplicate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    /// Its document id.
    pub doc_id: String,
    /// Its name.
    pub name: String,
    /// Who owns it (absent: in the pool).
    pub owner_id: Option<String>,
    /// `owned` or `pool`.
    pub state: String,
    /// What matched: `phone`, `email`, `credit_code`, `name`.
    pub matched_on: Vec<String>,
}

#[derive(Debug, SurrealValue)]
struct Match {
    id: RecordId,
    name: String,
    owner: Option<String>,
    state: String,
    phone_keys: Vec<String>,
    email_keys: Vec<String>,
    credit_code: Option<String>,
    company_key: String,
}

/// Live customers that share a key with `probe` (other than `except`), strongest signals first.
pub async fn candidates(
    db: &Db,
    probe: &Probe,
    except: Option<&str>,
) -> Result<Vec<Candidate>, DbError> {
    // One indexed lookup per key kind; the company key only when it is long enough to mean
    // something (two characters of a Chinese name, four of a Latin one).
    let company = (probe.company_key.chars().count() >= 2
        && (!probe.company_key.is_ascii() || probe.company_key.len() >= 4))
        .then(|| probe.company_key.clone());
    // Phones and emails are found through the search index (exact terms, a range each, wrapped
    // in a function call so the LIMIT is pushed into the scan, as in `search::by_term`); the
    // code and the company key through their own indexes.
    let terms: Vec<String> = probe
        .phone_keys
        .iter()
        .map(|k| format!("{}{k}", keys::PHONE_TERM))
        .chain(
            probe
                .email_keys
                .iter()
                .map(|k| format!("{}{k}", keys::EMAIL_TERM)),
        )
        .collect();
    let mut ids: Vec<RecordId> = Vec::new();
    for term in terms {
        let docs: Vec<String> =
            Query::new(
                "SELECT VALUE record::id(id)[1] FROM array::first([customer_term:[$term]..[$term_end]]) LIMIT 20",
            )
                .bind("term_end", format!("{term}\u{0}"))
                .bind("term", term)
                .take(db, 0)
                .await?;
        ids.extend(docs.iter().map(|d| ids::record("customer", d)));
    }
    if probe.credit_code.is_some() || company.is_some() {
        let found: Vec<RecordId> = Query::new(
            "array::concat(
                IF $code != NONE { (SELECT VALUE id FROM customer WHERE credit_code = $code AND state != 'deleted' LIMIT 20) } ELSE { [] },
                IF $company != NONE { (SELECT VALUE id FROM customer WHERE company_key = $company AND state != 'deleted' LIMIT 20) } ELSE { [] }
            )",
        )
        .bind("code", probe.credit_code.clone())
        .bind("company", company.clone())
        .take(db, 0)
        .await?;
        ids.extend(found);
    }
    ids.sort_by_key(ids::key_of);
    ids.dedup();
    let rows: Vec<Match> = if ids.is_empty() {
        Vec::new()
    } else {
        Query::new(
            "SELECT id, name, owner, state, phone_keys, email_keys, credit_code, company_key FROM $ids WHERE state != 'deleted'",
        )
        .bind("ids", ids)
        .take(db, 0)
        .await?
    };
    let mut out: Vec<(usize, Candidate)> = rows
        .into_iter()
        .filter(|m| Some(ids::key_of(&m.id).as_str()) != except)
        .map(|m| {
            let mut matched_on = Vec::new();
            if probe.credit_code.is_some() && m.credit_code == probe.credit_code {
                matched_on.push("credit_code".to_string());
            }
            if m.phone_keys.iter().any(|k| probe.phone_keys.contains(k)) {
                matched_on.push("phone".into());
            }
            if m.email_keys.iter().any(|k| probe.email_keys.contains(k)) {
                matched_on.push("email".into());
            }
            if company.as_deref() == Some(m.company_key.as_str()) {
                matched_on.push("name".into());
            }
            let strength = matched_on.len() * 10
                + usize::from(matched_on.first().is_some_and(|m| m == "credit_code"));
            (
                strength,
                Candidate {
                    doc_id: ids::key_of(&m.id),
                    name: m.name,
                    owner_id: m.owner,
                    state: m.state,
                    matched_on,
                },
            )
        })
        .filter(|(_, c)| !c.matched_on.is_empty())
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.doc_id.cmp(&b.1.doc_id)));
    Ok(out.into_iter().take(20).map(|(_, c)| c).collect())
}

/// Candidates as `actor` may see them: outside the actor's scope only the first character of
/// the name shows (the owner and the id stay, so the actor can ask the owner or a manager to
/// merge), so the check cannot be used to read other reps' customers.
pub fn for_actor(candidates: Vec<Candidate>, actor: &Actor) -> Vec<Candidate> {
    candidates
        .into_iter()
        .map(|mut c| {
            let in_scope = c
                .owner_id
                .as_deref()
                .is_some_and(|o| actor.scope.contains(o));
            if !in_scope {
                let first: String = c.name.chars().take(1).collect();
                c.name = format!("{first}***");
            }
            c
        })
        .collect()
}

/// `POST /api/v1/customers/duplicates`: the keys of a customer about to be created.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateCheck {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Phones.
    #[serde(default)]
    pub phones: Vec<String>,
    /// Emails.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Unified social credit code.
    pub credit_code: Option<String>,
}

/// The existing customers a customer with these details would likely duplicate, so a form can
/// warn while the rep types.
#[utoipa::path(post, path = "/api/v1/customers/duplicates", tag = "customers", request_body = DuplicateCheck,
    responses((status = 200, body = Vec<Candidate>), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub(crate) async fn check_duplicates(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<DuplicateCheck>,
) -> Result<axum::Json<Vec<Candidate>>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let mut doc = Document::new(body.name);
    doc.phones = body.phones;
    doc.emails = body.emails;
    doc.credit_code = body.credit_code.map(|c| c.trim().to_uppercase());
    Ok(axum::Json(for_actor(
        candidates(&state.db, &Probe::of(&doc), None).await?,
        &actor,
    )))
}
