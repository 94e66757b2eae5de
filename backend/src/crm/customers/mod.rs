//! Customers as the API reads them: projections of the synced customer documents, filtered by
//! the actor's scope and field rules. Writes are automerge changes made through the sync engine,
//! the same path a phone's edits take, so a phone sees a web edit and the other way round.

pub mod duplicates;
pub mod files;
pub mod history;
pub mod import;
pub mod keys;
pub mod merge;
pub mod search;
pub mod upload;
pub mod view;

use autosurgeon::Text;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use outpost_mobile::api::Problem;
use outpost_mobile::records::customer::{Contact, Customer as Document};
use outpost_sync::DocumentId;
use serde::{Deserialize, Serialize};
use surrealdb::types::{RecordId, SurrealValue};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, Permission};
use crate::crm::records::{Projection, create_visible, parse_doc_id, tombstone, visible};
use crate::error::ApiError;
use crate::platform::http::ApiJson;
use crate::platform::ids;

/// The customer routes; an import may be `max_import_bytes` long.
pub(crate) fn routes(max_import_bytes: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search::list_customers, create_customer))
        .routes(routes!(get_customer, update_customer, delete_customer))
        .routes(routes!(view::customer_360))
        .routes(routes!(search::export_customers))
        .routes(routes!(duplicates::check_duplicates))
        .routes(routes!(merge::merge_customers))
        .routes(routes!(merge::undo_merge))
        .routes(routes!(import::commit))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import::dry_run))
                .layer(import::body_limit(max_import_bytes)),
        )
}

/// Who holds a customer, as the one value its `(holder, key)` indexes order it by: `u:<user>`
/// while a rep owns it, `p:<pool>` while it waits in a pool to be claimed, nothing once it is
/// deleted or merged away. A rep's list, a team's list, a pool's claimable list and a rep's
/// counts each walk one holder's part of the list order. A change of hands changes this one
/// value, so it moves the customer in two index entries (both orders) where an owner index
/// and a pool-and-state index used to take four.
pub fn holder(state: &str, owner: Option<&str>, pool: Option<&str>) -> Option<String> {
    match (state, owner, pool) {
        ("owned", Some(owner), _) => Some(owner_holder(owner)),
        ("pool", _, Some(pool)) => Some(pool_holder(pool)),
        _ => None,
    }
}

/// The [`holder`] of the customers `user` owns.
pub fn owner_holder(user: &str) -> String {
    format!("u:{user}")
}

/// The [`holder`] of the customers waiting in `pool`.
pub fn pool_holder(pool: &str) -> String {
    format!("p:{pool}")
}

/// A customer projection row.
#[derive(Debug, Clone, SurrealValue)]
pub struct CustomerRow {
    id: RecordId,
    name: String,
    kind: String,
    level: Option<String>,
    industry: Option<String>,
    source: Option<String>,
    phones: Vec<String>,
    emails: Vec<String>,
    address: Option<String>,
    tags: Vec<String>,
    notes: String,
    contacts: String,
    owner: Option<String>,
    state: String,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    credit_code: Option<String>,
    pool: Option<String>,
    owned_since: Option<DateTime<Utc>>,
    previous_owner: Option<String>,
    released_at: Option<DateTime<Utc>>,
    merged_into: Option<String>,
    last_follow_up_at: Option<DateTime<Utc>>,
    list_key: String,
    list_key_newest: String,
}

/// A customer as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    /// The automerge-repo document id; open `automerge:<doc_id>` with any automerge-repo client.
    pub doc_id: String,
    /// Company or person name.
    pub name: String,
    /// `company` or `person`.
    pub kind: String,
    /// `A` to `D`.
    pub level: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Lead source.
    pub source: Option<String>,
    /// Phone numbers.
    pub phones: Vec<String>,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Notes.
    pub notes: String,
    /// Contacts.
    #[schema(value_type = Vec<Object>)]
    pub contacts: serde_json::Value,
    /// Owning user; absent while in the pool.
    pub owner_id: Option<String>,
    /// `owned`, `pool` or `deleted`.
    pub state: String,
    /// Unified social credit code.
    pub credit_code: Option<String>,
    /// The public pool it returns to (and sits in while `state` is `pool`).
    pub pool_id: Option<String>,
    /// When its owner got it.
    pub owned_since: Option<DateTime<Utc>>,
    /// Its owner before the last release or return.
    pub previous_owner_id: Option<String>,
    /// When it last went back to the pool.
    pub released_at: Option<DateTime<Utc>>,
    /// Set on a merged-away customer: the one it was merged into.
    pub merged_into: Option<String>,
    /// The newest follow-up, as the pool's return rules count it.
    pub last_follow_up_at: Option<DateTime<Utc>>,
    /// Whether phone numbers are masked for the caller (`138****5678`).
    pub phones_masked: bool,
    /// Creator.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Customer {
    /// The customer as `actor` may see it: phone numbers (its own and its contacts') are masked
    /// unless the actor owns it or has `customer.phone_full`. Every read path ends here.
    pub fn for_actor(mut self, actor: &Actor) -> Self {
        if actor.sees_full_phones(self.owner_id.as_deref()) {
            return self;
        }
        self.phones = self.phones.iter().map(|p| keys::mask_phone(p)).collect();
        if let Some(contacts) = self.contacts.as_array_mut() {
            for contact in contacts {
                if let Some(phones) = contact.get_mut("phones").and_then(|p| p.as_array_mut()) {
                    for phone in phones {
                        if let Some(raw) = phone.as_str() {
                            *phone = serde_json::Value::String(keys::mask_phone(raw));
                        }
                    }
                }
            }
        }
        self.phones_masked = true;
        self
    }
}

impl Projection for CustomerRow {
    const TABLE: &'static str = "customer";
    const NAME: &'static str = "customer";
    fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
    fn state(&self) -> &str {
        &self.state
    }
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Self {
            doc_id: ids::key_of(&row.id),
            name: row.name,
            kind: row.kind,
            level: row.level,
            industry: row.industry,
            source: row.source,
            phones: row.phones,
            emails: row.emails,
            address: row.address,
            tags: row.tags,
            notes: row.notes,
            contacts: serde_json::from_str(&row.contacts)
                .unwrap_or(serde_json::Value::Array(Vec::new())),
            owner_id: row.owner,
            state: row.state,
            credit_code: row.credit_code,
            pool_id: row.pool,
            owned_since: row.owned_since,
            previous_owner_id: row.previous_owner,
            released_at: row.released_at,
            merged_into: row.merged_into,
            last_follow_up_at: row.last_follow_up_at,
            phones_masked: false,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One customer the caller may see, by document id.
#[utoipa::path(get, path = "/api/v1/customers/{doc_id}", tag = "customers",
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn get_customer(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerRead)?;
    let id = parse_doc_id(&doc_id)?;
    Ok(axum::Json(readable(&state, &actor, &id).await?))
}

/// A customer the actor may read: one in its scope, or one sitting in a pool the actor belongs
/// to or configures (what a rep browses before claiming). Masked as the actor may see it.
pub async fn readable(
    state: &AppState,
    actor: &Actor,
    id: &DocumentId,
) -> Result<Customer, ApiError> {
    match visible::<CustomerRow, Customer>(state, actor, id).await {
        Ok(customer) => Ok(customer.for_actor(actor)),
        Err(ApiError::NotFound(_)) => {
            let row: Option<CustomerRow> = state.db.get("customer", id.as_str()).await?;
            let customer = row.map(Customer::from);
            if let Some(customer) = customer
                && customer.state == "pool"
                && let Some(pool) = &customer.pool_id
                && let Some(pool) = crate::crm::pool::find_pool(state, pool).await?
                && (pool.may_configure(actor) || pool.may_claim(state, actor).await?)
            {
                return Ok(customer.for_actor(actor));
            }
            Err(ApiError::NotFound("customer"))
        }
        Err(e) => Err(e),
    }
}

/// A contact in a request body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    /// Stable id; generated when absent.
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Job title.
    pub title: Option<String>,
    /// Phone numbers.
    #[serde(default)]
    pub phones: Vec<String>,
    /// Email addresses.
    #[serde(default)]
    pub emails: Vec<String>,
}

impl From<ContactInput> for Contact {
    fn from(c: ContactInput) -> Self {
        Contact {
            id: c.id.unwrap_or_else(ids::new_key),
            name: c.name,
            title: c.title,
            phones: c.phones,
            emails: c.emails,
        }
    }
}

/// `POST /api/v1/customers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// Company or person name.
    pub name: String,
    /// `company` (default) or `person`.
    pub kind: Option<String>,
    /// `A` to `D`.
    pub level: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Lead source.
    pub source: Option<String>,
    /// Phone numbers.
    #[serde(default)]
    pub phones: Vec<String>,
    /// Email addresses.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Notes.
    pub notes: Option<String>,
    /// Contacts.
    #[serde(default)]
    pub contacts: Vec<ContactInput>,
    /// Unified social credit code.
    pub credit_code: Option<String>,
    /// Create it even if it looks like an existing customer (after a 409 `duplicate`).
    #[serde(default)]
    pub confirm_duplicate: bool,
    /// The public pool it belongs to (returns go there).
    pub pool_id: Option<String>,
}

/// `PATCH /api/v1/customers/{doc_id}`: only the fields present change; `null` clears an
/// optional field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomer {
    /// New name.
    pub name: Option<String>,
    /// New kind.
    pub kind: Option<String>,
    /// New level, or `null`.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub level: Option<Option<String>>,
    /// New industry, or `null`.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub industry: Option<Option<String>>,
    /// New source, or `null`.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub source: Option<Option<String>>,
    /// New phone list.
    pub phones: Option<Vec<String>>,
    /// New email list.
    pub emails: Option<Vec<String>>,
    /// New address, or `null`.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub address: Option<Option<String>>,
    /// New tag list.
    pub tags: Option<Vec<String>>,
    /// New notes (replaces the text; phones merge their own edits character by character).
    pub notes: Option<String>,
    /// New contact list (contacts are matched by `id`).
    pub contacts: Option<Vec<ContactInput>>,
    /// New unified social credit code, or `null`.
    #[serde(default, deserialize_with = "crate::crm::records::double_option")]
    pub credit_code: Option<Option<String>>,
}

/// Create a customer owned by the caller.
#[utoipa::path(post, path = "/api/v1/customers", tag = "customers", request_body = CreateCustomer,
    responses((status = 201, body = Customer), (status = 403, body = Problem), (status = 409, body = Problem, description = "A likely duplicate; `candidates` lists the matches"), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create_customer(
    State(state): State<AppState>,
    actor: Actor,
    ApiJson(body): ApiJson<CreateCustomer>,
) -> Result<(StatusCode, axum::Json<Customer>), ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let mut record = Document::new(body.name);
    if let Some(kind) = body.kind {
        record.kind = kind;
    }
    record.level = body.level;
    record.industry = body.industry;
    record.source = body.source;
    record.phones = body.phones;
    record.emails = body.emails;
    record.address = body.address;
    record.tags = body.tags;
    record.notes = Text::with_value(body.notes.unwrap_or_default());
    record.contacts = body.contacts.into_iter().map(Contact::from).collect();
    record.credit_code = body.credit_code.map(|code| code.trim().to_uppercase());
    let violations = outpost_mobile::records::RecordType::validate(&record);
    if !violations.is_empty() {
        return Err(crate::crm::records::change_error(
            "customer",
            outpost_sync::ChangeError::Invalid(violations),
        ));
    }
    if let Some(pool_id) = &body.pool_id {
        crate::crm::pool::require_pool(&state, pool_id, "pool_id").await?;
        record.custody.pool = Some(pool_id.clone());
        record.custody.owned_since = Some(state.clock.now().to_rfc3339());
    }
    if !body.confirm_duplicate {
        let candidates = duplicates::for_actor(
            duplicates::candidates(&state.db, &duplicates::Probe::of(&record), None).await?,
            &actor,
        );
        if !candidates.is_empty() {
            return Err(ApiError::Duplicate(
                serde_json::to_value(&candidates).unwrap_or_default(),
            ));
        }
    }
    let created = create_visible::<Document, CustomerRow, Customer>(&state, &actor, record).await?;
    Ok((StatusCode::CREATED, axum::Json(created.for_actor(&actor))))
}

/// Change a customer the caller may see: one in its scope, or one sitting in a pool the caller
/// configures (a pool's admins keep its customers' data right; members browse and claim).
#[utoipa::path(patch, path = "/api/v1/customers/{doc_id}", tag = "customers", request_body = UpdateCustomer,
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 200, body = Customer), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn update_customer(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
    ApiJson(body): ApiJson<UpdateCustomer>,
) -> Result<axum::Json<Customer>, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    // The pool whose customers the caller may edit, if the customer sits in one it configures.
    let customer = readable(&state, &actor, &id).await?;
    let configured_pool = match (&customer.pool_id, customer.state.as_str()) {
        (Some(pool), "pool") => crate::crm::pool::find_pool(&state, pool)
            .await?
            .filter(|p| p.may_configure(&actor))
            .map(|p| p.id),
        _ => None,
    };
    let mut editable = false;
    state
        .sync
        .update::<Document>(&crate::crm::records::author(&actor), &id, false, |c| {
            // Decided on the document as it is now (it may have been claimed meanwhile).
            let in_scope = c
                .server
                .owner
                .as_deref()
                .is_some_and(|owner| actor.scope.contains(owner));
            let in_configured_pool = c.server.state == "pool"
                && configured_pool.is_some()
                && c.custody.pool == configured_pool;
            editable = c.server.state != "deleted" && (in_scope || in_configured_pool);
            if editable {
                apply_update(c, &body);
            }
        })
        .await
        .map_err(|e| crate::crm::records::change_error("customer", e))?;
    if !editable {
        // The caller can read it (a pool member browsing before a claim) but not change it.
        return Err(ApiError::Forbidden(Permission::PoolConfigure.name()));
    }
    Ok(axum::Json(readable(&state, &actor, &id).await?))
}

/// Applies the fields of a `PATCH` to a customer document.
fn apply_update(c: &mut Document, body: &UpdateCustomer) {
    if let Some(v) = body.name.clone() {
        c.name = v;
    }
    if let Some(v) = body.kind.clone() {
        c.kind = v;
    }
    if let Some(v) = body.level.clone() {
        c.level = v;
    }
    if let Some(v) = body.industry.clone() {
        c.industry = v;
    }
    if let Some(v) = body.source.clone() {
        c.source = v;
    }
    if let Some(v) = body.phones.clone() {
        c.phones = v;
    }
    if let Some(v) = body.emails.clone() {
        c.emails = v;
    }
    if let Some(v) = body.address.clone() {
        c.address = v;
    }
    if let Some(v) = body.tags.clone() {
        c.tags = v;
    }
    if let Some(v) = body.notes.clone() {
        outpost_mobile::records::set_text(&mut c.notes, &v);
    }
    if let Some(v) = body.contacts.clone() {
        c.contacts = v.into_iter().map(Contact::from).collect();
    }
    if let Some(v) = body.credit_code.clone() {
        c.credit_code = v.map(|code| code.trim().to_uppercase());
    }
}

/// Delete a customer: the document becomes a tombstone (state `deleted`) that every device
/// syncs; lists and reads stop showing it.
#[utoipa::path(delete, path = "/api/v1/customers/{doc_id}", tag = "customers",
    params(("doc_id" = String, Path, description = "The customer's document id")),
    responses((status = 204, description = "Deleted"), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
async fn delete_customer(
    State(state): State<AppState>,
    actor: Actor,
    axum::extract::Path(doc_id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    actor.require(Permission::CustomerWrite)?;
    let id = parse_doc_id(&doc_id)?;
    tombstone::<Document, CustomerRow, Customer>(&state, &actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A `customer_doc_id` given in another record's body: a customer the actor may see, or a 422
/// on `customer_doc_id` (the same answer whether it does not exist or is out of scope).
pub async fn customer_reference(
    state: &AppState,
    actor: &Actor,
    raw: &str,
) -> Result<DocumentId, ApiError> {
    let customer = DocumentId::parse(raw)
        .ok_or_else(|| ApiError::invalid_field("customer_doc_id", "is not a document id"))?;
    visible::<CustomerRow, Customer>(state, actor, &customer)
        .await
        .map_err(|_| ApiError::invalid_field("customer_doc_id", "no such customer"))?;
    Ok(customer)
}
