//! The first start: an empty store gets the company, a root department, the built-in roles and
//! a first admin. There is never a default password: it is either given or generated and shown
//! once.

use surrealdb::types::SurrealValue;

use crate::config::Config;
use crate::error::ApiError;
use crate::platform::audit::AuditContext;
use crate::platform::auth::{generate_password, hash_password, random_token};
use crate::platform::db::Tx;
use crate::platform::db::{Db, DbError, Query};
use crate::platform::ids;

use super::access::{DataScope, Permission};
use super::users::create_user_in;
use super::validate;

/// The built-in roles: name, data scope, permissions.
fn builtin_roles() -> Vec<(&'static str, DataScope, Vec<Permission>)> {
    use Permission::*;
    vec![
        ("admin", DataScope::All, Permission::ALL.to_vec()),
        (
            "department_head",
            DataScope::DepartmentAndChildren,
            vec![
                UserRead,
                CustomerRead,
                CustomerWrite,
                CustomerExport,
                CustomerPhoneFull,
                CustomerAssign,
            ],
        ),
        (
            "manager",
            DataScope::OwnAndSubordinates,
            vec![UserRead, CustomerRead, CustomerWrite, CustomerAssign],
        ),
        ("rep", DataScope::Own, vec![CustomerRead, CustomerWrite]),
    ]
}

/// The first admin's credentials when they were generated here.
#[derive(Debug, Clone)]
pub struct GeneratedAdmin {
    /// Login.
    pub email: String,
    /// Password, to be shown once.
    pub password: String,
}

#[derive(Debug, SurrealValue)]
struct Setting {
    value: String,
}

/// Returns the access-token signing secret: the configured one, or the one kept in the store,
/// created on first use.
pub async fn signing_secret(db: &Db, config: &Config) -> Result<String, DbError> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.expose().to_string());
    }
    let candidate = random_token();
    db.retry(|| async {
        let setting: Option<Setting> =
            Query::new("UPSERT setting:jwt_secret SET value = value ?? $candidate RETURN AFTER")
                .bind("candidate", candidate.clone())
                .take(db, 0)
                .await?;
        setting
            .map(|s| s.value)
            .ok_or_else(|| DbError::Unexpected("no signing secret".into()))
    })
    .await
}

/// Whether the company exists already.
pub async fn is_bootstrapped(db: &Db) -> Result<bool, DbError> {
    let company: Option<surrealdb::types::Value> = Query::new("SELECT * FROM ONLY company:main")
        .take(db, 0)
        .await?;
    Ok(company.is_some())
}

/// Creates company, root department, built-in roles and the first admin, all in one transaction,
/// unless the company exists. `password` of `None` generates one and returns it.
pub async fn bootstrap(
    db: &Db,
    config: &Config,
    admin_email: &str,
    admin_name: &str,
    password: Option<String>,
    ctx: &AuditContext,
) -> Result<Option<GeneratedAdmin>, ApiError> {
    if is_bootstrapped(db).await? {
        return Ok(None);
    }
    let email =
        validate::normalize_email(admin_email).map_err(|m| ApiError::invalid_field("email", m))?;
    if let Some(p) = &password {
        validate::password(p, config.auth.min_password_length)
            .map_err(|m| ApiError::invalid_field("password", m))?;
    }
    let generated = password.is_none().then(generate_password);
    let hash = hash_password(password.or_else(|| generated.clone()).unwrap_or_default()).await?;

    let mut tx = Tx::new();
    tx.push("IF (SELECT * FROM ONLY company:main) { THROW 'already-bootstrapped' }");
    let company_name = tx.bind(config.bootstrap.company_name.clone());
    tx.push(format!(
        "CREATE company:main SET name = {company_name}, created_at = time::now()"
    ));
    let root = ids::new_key();
    let root_id = tx.bind(ids::record("department", &root));
    let root_name = tx.bind(config.bootstrap.root_department.clone());
    tx.push(format!("CREATE {root_id} SET name = {root_name}, parent = NONE, ancestors = [], created_at = time::now(), updated_at = time::now()"));
    let mut admin_role = String::new();
    for (name, scope, permissions) in builtin_roles() {
        let key = ids::new_key();
        if name == "admin" {
            admin_role = key.clone();
        }
        let id = tx.bind(ids::record("role", &key));
        let name_b = tx.bind(name.to_string());
        let scope_b = tx.bind(scope.name().to_string());
        let perms_b = tx.bind(
            permissions
                .iter()
                .map(|p| p.name().to_string())
                .collect::<Vec<_>>(),
        );
        tx.push(format!(
            "CREATE {id} SET name = {name_b}, data_scope = {scope_b}, permissions = {perms_b}, builtin = true, created_at = time::now(), updated_at = time::now()"
        ));
    }
    let admin = ids::new_key();
    create_user_in(
        &mut tx,
        &admin,
        admin_name,
        Some(&email),
        None,
        &root,
        None,
        &[admin_role],
        "Asia/Shanghai",
        &hash,
    );
    tx.audit(
        ctx,
        "company.bootstrap",
        Some(("user", &admin)),
        serde_json::json!({ "company": config.bootstrap.company_name, "admin_email": email }),
    );
    match tx.run(db).await {
        Ok(_) => {}
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains("already-bootstrapped")) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(generated.map(|password| GeneratedAdmin { email, password }))
}
