//! Login, refresh-token rotation, logout and failed-login throttling.
//!
//! A login starts a session (a refresh-token family). Each refresh token is good for one use and
//! buys the next pair; presenting a used one means it was stolen or replayed, so the whole family
//! is revoked. Access tokens name their session, and every request checks the session is live,
//! so revocation (logout, deactivation, device revocation) takes effect at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use outpost_mobile::api::{LoginRequest, Problem, RefreshRequest, TokenPair};
use surrealdb::types::SurrealValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::platform::audit::{self, AuditContext};
use crate::platform::auth::{AccessClaims, random_token, token_digest, verify_password};
use crate::platform::db::Tx;
use crate::platform::db::{DbError, Query};
use crate::platform::http::{ApiJson, ClientAddress, RequestId};
use crate::platform::ids;

use super::model::{DeviceRow, SessionRow, UserRow};
use super::validate;

/// Counts failed logins per account and per client address in a sliding window.
///
/// Kept in memory: it protects one process. Behind a load balancer each node throttles on its
/// own, which still bounds guessing to `nodes x limit` per window.
pub struct LoginLimiter {
    window: Duration,
    max_per_account: u32,
    max_per_address: u32,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Upper bound on tracked keys, so a flood of distinct logins cannot grow memory without end.
const MAX_TRACKED_KEYS: usize = 100_000;

impl LoginLimiter {
    /// A limiter with the configured limits.
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            window: Duration::from_secs(config.failed_login_window_secs.max(1)),
            max_per_account: config.max_failed_logins_per_account.max(1),
            max_per_address: config.max_failed_logins_per_address.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, address: Option<&str>) -> [(String, bool); 2] {
        [
            (format!("account:{account}"), true),
            (format!("address:{}", address.unwrap_or("unknown")), false),
        ]
    }

    /// `Err(seconds)` when either key is over its limit.
    pub fn check(&self, account: &str, address: Option<&str>) -> Result<(), u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = 0u64;
        for (key, is_account) in Self::keys(account, address) {
            let limit = if is_account {
                self.max_per_account
            } else {
                self.max_per_address
            };
            if let Some(times) = failures.get_mut(&key) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    times.pop_front();
                }
                if times.len() >= limit as usize
                    && let Some(oldest) = times.front()
                {
                    let remaining = self.window.saturating_sub(now.duration_since(*oldest));
                    wait = wait.max(remaining.as_secs() + 1);
                }
            }
        }
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    /// Counts a failure against both keys.
    pub fn record_failure(&self, account: &str, address: Option<&str>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED_KEYS {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        for (key, _) in Self::keys(account, address) {
            failures.entry(key).or_default().push_back(now);
        }
    }

    /// Forgets an account's failures after a successful login.
    pub fn clear_account(&self, account: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&format!("account:{account}"));
    }
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// A throwaway hash, made once, so that a login for an unknown account costs as much as a real
/// one and does not reveal which accounts exist by its timing.
fn dummy_hash() -> &'static str {
    use argon2::password_hash::PasswordHasher;
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        argon2::Argon2::default()
            .hash_password(random_token().as_bytes())
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Log in with an email or phone number and a password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 401, description = "Wrong login or password", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
        (status = 429, description = "Too many failed attempts", body = Problem),
    ))]
async fn login(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    let account = body.login.trim().to_lowercase();
    let ctx = AuditContext {
        actor: None,
        channel: "api".into(),
        device: None,
        request_id,
        address: address.clone(),
    };
    if let Err(wait) = state.login_limiter.check(&account, address.as_deref()) {
        audit::record(
            &state.db,
            &ctx,
            "auth.login_throttled",
            None,
            serde_json::json!({ "login": account }),
        )
        .await?;
        return Err(ApiError::RateLimited(wait));
    }
    let user = match validate::normalize_login(&body.login) {
        Some(login) => find_user_by_login(&state, &login).await?,
        None => None,
    };
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
    let password_ok = verify_password(body.password.clone(), hash).await && user.is_some();
    let Some(user) = user.filter(|_| password_ok) else {
        state
            .login_limiter
            .record_failure(&account, address.as_deref());
        audit::record(
            &state.db,
            &ctx,
            "auth.login_failed",
            None,
            serde_json::json!({ "login": account, "reason": "wrong login or password" }),
        )
        .await?;
        return Err(ApiError::InvalidCredentials);
    };
    let user_id = ids::key_of(&user.id);
    let ctx = AuditContext {
        actor: Some(user_id.clone()),
        ..ctx
    };
    if !user.active {
        audit::record(
            &state.db,
            &ctx,
            "auth.login_failed",
            Some(("user", &user_id)),
            serde_json::json!({ "reason": "deactivated" }),
        )
        .await?;
        return Err(ApiError::Unauthorized("this account is deactivated".into()));
    }
    let device = match &body.device_id {
        None => None,
        Some(raw) => {
            let key = ids::parse_key(raw)
                .map_err(|_| ApiError::invalid_field("device_id", "is not a device id"))?;
            let device: Option<DeviceRow> = state.db.get("device", &key).await?;
            match device {
                Some(d) if d.user == user_id && d.revoked_at.is_none() => Some(key),
                _ => {
                    return Err(ApiError::invalid_field(
                        "device_id",
                        "is not an active device of this user",
                    ));
                }
            }
        }
    };
    state.login_limiter.clear_account(&account);
    let ctx = AuditContext {
        device: device.clone(),
        ..ctx
    };
    start_session(&state, &ctx, &user_id, device)
        .await
        .map(axum::Json)
}

async fn find_user_by_login(state: &AppState, login: &str) -> Result<Option<UserRow>, DbError> {
    let user: Option<UserRow> = Query::new(
        "LET $l = (SELECT VALUE user FROM ONLY $login); IF $l { SELECT * FROM ONLY type::record('user', $l) } ELSE { NONE }",
    )
    .bind("login", ids::record("login", login))
    .take(&state.db, 1)
    .await?;
    Ok(user)
}

/// Starts a session for `user_id` and hands out its first token pair.
pub async fn start_session(
    state: &AppState,
    ctx: &AuditContext,
    user_id: &str,
    device: Option<String>,
) -> Result<TokenPair, ApiError> {
    let session_key = ids::new_key();
    let refresh_token = random_token();
    let expires_at = Utc::now()
        + chrono::Duration::days(
            i64::try_from(state.config.auth.refresh_token_ttl_days).unwrap_or(30),
        );
    let mut tx = Tx::new();
    let session = tx.bind(ids::record("session", &session_key));
    let user = tx.bind(user_id.to_string());
    let device_b = tx.bind(device.clone());
    let expires = tx.bind(expires_at);
    let token = tx.bind(ids::record("refresh_token", &token_digest(&refresh_token)));
    let session_key_b = tx.bind(session_key.clone());
    tx.push(format!(
        "CREATE {session} SET user = {user}, device = {device_b}, created_at = time::now(), expires_at = {expires}, revoked_at = NONE, revoke_reason = NONE"
    ));
    tx.push(format!(
        "CREATE {token} SET session = {session_key_b}, created_at = time::now(), used_at = NONE"
    ));
    tx.audit(
        ctx,
        "auth.login",
        Some(("user", user_id)),
        serde_json::json!({ "session_id": session_key, "device_id": device }),
    );
    tx.run(&state.db).await?;
    token_pair(state, user_id, &session_key, device, refresh_token)
}

fn token_pair(
    state: &AppState,
    user_id: &str,
    session_id: &str,
    device: Option<String>,
    refresh_token: String,
) -> Result<TokenPair, ApiError> {
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let ttl = state.config.auth.access_token_ttl_secs;
    let access_token = state.keys.sign(&AccessClaims {
        sub: user_id.to_string(),
        sid: session_id.to_string(),
        dev: device,
        iat: now,
        exp: now + ttl,
    })?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        expires_in: ttl,
        token_type: "Bearer".into(),
    })
}

#[derive(Debug, SurrealValue)]
struct RefreshLookup {
    session: Option<SessionRow>,
    used: bool,
    active: bool,
}

/// Exchange a refresh token for a new pair. Each refresh token works once; reusing one ends
/// the whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokenPair),
        (status = 401, description = "Unknown, expired, reused or revoked refresh token", body = Problem),
    ))]
async fn refresh(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<axum::Json<TokenPair>, ApiError> {
    let invalid = || ApiError::Unauthorized("the refresh token is not valid; log in again".into());
    let digest = token_digest(&body.refresh_token);
    let lookup: Option<RefreshLookup> = Query::new(
        "LET $t = (SELECT * FROM ONLY $rt);
         IF $t {
            LET $s = (SELECT * FROM ONLY type::record('session', $t.session));
            RETURN {
                session: $s,
                used: $t.used_at != NONE,
                active: (SELECT VALUE active FROM ONLY type::record('user', $s.user)) ?? false,
            }
         } ELSE { NONE }",
    )
    .bind("rt", ids::record("refresh_token", &digest))
    .take(&state.db, 1)
    .await?;
    let lookup = lookup.ok_or_else(invalid)?;
    let session = lookup.session.ok_or_else(invalid)?;
    let session_id = ids::key_of(&session.id);
    let ctx = AuditContext {
        actor: Some(session.user.clone()),
        channel: "api".into(),
        device: session.device.clone(),
        request_id,
        address,
    };
    if session.revoked_at.is_some() || session.expires_at < Utc::now() || !lookup.active {
        return Err(invalid());
    }
    if lookup.used {
        revoke_reused(&state, &ctx, &session_id).await?;
        return Err(invalid());
    }
    let next = random_token();
    let mut tx = Tx::new();
    let old = tx.bind(ids::record("refresh_token", &digest));
    let new = tx.bind(ids::record("refresh_token", &token_digest(&next)));
    let session_b = tx.bind(session_id.clone());
    tx.push(format!(
        "IF (SELECT VALUE used_at FROM ONLY {old}) != NONE {{ THROW 'refresh-token-reused' }}"
    ));
    tx.push(format!("UPDATE {old} SET used_at = time::now()"));
    tx.push(format!(
        "CREATE {new} SET session = {session_b}, created_at = time::now(), used_at = NONE"
    ));
    tx.audit(
        &ctx,
        "auth.refresh",
        Some(("user", &session.user)),
        serde_json::json!({ "session_id": session_id }),
    );
    match tx.run(&state.db).await {
        Ok(_) => {}
        Err(e)
            if e.thrown_message()
                .is_some_and(|m| m.contains("refresh-token-reused")) =>
        {
            revoke_reused(&state, &ctx, &session_id).await?;
            return Err(invalid());
        }
        Err(e) => return Err(e.into()),
    }
    token_pair(&state, &session.user, &session_id, session.device, next).map(axum::Json)
}

async fn revoke_reused(
    state: &AppState,
    ctx: &AuditContext,
    session_id: &str,
) -> Result<(), ApiError> {
    let mut tx = Tx::new();
    let session = tx.bind(ids::record("session", session_id));
    tx.push(format!(
        "UPDATE {session} SET revoked_at = time::now(), revoke_reason = 'refresh token reused' WHERE revoked_at = NONE"
    ));
    let user = ctx.actor.clone().unwrap_or_default();
    tx.audit(
        ctx,
        "auth.refresh_reuse",
        Some(("user", &user)),
        serde_json::json!({ "session_id": session_id, "effect": "session revoked" }),
    );
    tx.run(&state.db).await?;
    Ok(())
}

/// End the session the refresh token belongs to. Ending an already ended session is not an
/// error.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "The session is over"),
        (status = 401, description = "Unknown refresh token", body = Problem),
    ))]
async fn logout(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    let session: Option<SessionRow> = Query::new(
        "LET $s = (SELECT VALUE session FROM ONLY $rt); IF $s { SELECT * FROM ONLY type::record('session', $s) } ELSE { NONE }",
    )
    .bind("rt", ids::record("refresh_token", &token_digest(&body.refresh_token)))
    .take(&state.db, 1)
    .await?;
    let session = session.ok_or_else(|| ApiError::Unauthorized("unknown refresh token".into()))?;
    if session.revoked_at.is_none() {
        let ctx = AuditContext {
            actor: Some(session.user.clone()),
            channel: "api".into(),
            device: session.device.clone(),
            request_id,
            address,
        };
        revoke_sessions(
            &state,
            &ctx,
            SessionSelector::One(ids::key_of(&session.id)),
            "logout",
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Which sessions to revoke.
pub enum SessionSelector {
    /// One session.
    One(String),
    /// Every session of a user.
    User(String),
    /// Every session bound to a device.
    Device(String),
    /// Every session of a user except one (after a password change).
    UserExcept(String, String),
}

/// Revokes sessions and audits it, in one transaction.
pub async fn revoke_sessions(
    state: &AppState,
    ctx: &AuditContext,
    which: SessionSelector,
    reason: &str,
) -> Result<(), ApiError> {
    let mut tx = Tx::new();
    revoke_sessions_in(&mut tx, &which, reason);
    let (kind, target) = match &which {
        SessionSelector::One(s) => ("session", s.clone()),
        SessionSelector::User(u) | SessionSelector::UserExcept(u, _) => ("user", u.clone()),
        SessionSelector::Device(d) => ("device", d.clone()),
    };
    tx.audit(
        ctx,
        "auth.sessions_revoked",
        Some((kind, &target)),
        serde_json::json!({ "reason": reason }),
    );
    tx.run(&state.db).await?;
    Ok(())
}

/// Adds the revocation of sessions to a transaction (for callers that change more).
pub fn revoke_sessions_in(tx: &mut Tx, which: &SessionSelector, reason: &str) {
    let reason = tx.bind(reason.to_string());
    let condition = match which {
        SessionSelector::One(s) => format!("id = {}", tx.bind(ids::record("session", s))),
        SessionSelector::User(u) => format!("user = {}", tx.bind(u.clone())),
        SessionSelector::Device(d) => format!("device = {}", tx.bind(Some(d.clone()))),
        SessionSelector::UserExcept(u, keep) => format!(
            "user = {} AND id != {}",
            tx.bind(u.clone()),
            tx.bind(ids::record("session", keep))
        ),
    };
    tx.push(format!(
        "UPDATE session SET revoked_at = time::now(), revoke_reason = {reason} WHERE {condition} AND revoked_at = NONE"
    ));
}
