//! The device client a phone app embeds: a local store on disk, typed offline edits, an outbox
//! of commands, and a sync round against the server.
//!
//! Everything the user does is durable when the call returns: [`Device::create`] and
//! [`Device::update`] save the document before they return, [`Device::enqueue`] saves the
//! command. A phone killed at any instant therefore loses no local edit; the next
//! [`Device::sync`] sends what the server lacks (automerge sync is idempotent, so a round cut off
//! halfway simply runs again).
//!
//! A sync round:
//! 1. fetches the manifest (`GET /api/v1/sync/manifest`): the documents the user may see and a
//!    digest of the server's heads of each;
//! 2. drops every local document the server knew and no longer lists (ownership moved, the
//!    customer returned to the pool, the record was deleted);
//! 3. over `GET /sync` (automerge-repo protocol v1) syncs only the documents that differ: local
//!    changes not yet acknowledged, digests that differ, documents new to this device;
//! 4. sends the outbox, oldest first, each command with its own `Idempotency-Key`;
//! 5. when a command succeeded (a claim may add a customer), fetches the manifest once more.
//!
//! The report says what changed, what arrived, what was dropped and what the server answered.

mod link;
mod outbox;
mod store;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, AutoCommit, ChangeHash};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use outbox::{Command, CommandOutcome};

use crate::DocumentId;
use crate::api::{Manifest, Problem, TokenPair, heads_digest};
use crate::records::{self, RecordType, ServerFields, Violation};
use link::Link;
use outbox::Outbox;
use store::{Files, read_optional, write_atomic};

/// Why a device call failed. Local edits that fail change nothing.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The local store could not be read or written.
    #[error("local store: {0}")]
    Store(#[from] std::io::Error),
    /// A file in the local store does not parse.
    #[error("a local file is damaged: {0}")]
    Corrupt(String),
    /// The call needs a session; log in first.
    #[error("not logged in on this device")]
    NotLoggedIn,
    /// The session ended (logged out elsewhere, device revoked, user deactivated): log in again.
    #[error("the session has ended: {0}")]
    SessionEnded(String),
    /// This store belongs to another user; wipe it before logging in as someone else.
    #[error("this device's store belongs to another user")]
    OtherUser,
    /// No such document on this device.
    #[error("no document {0} on this device")]
    UnknownDocument(String),
    /// The document is of another type than asked for.
    #[error("document {id} is a {actual}, not a {expected}")]
    WrongType {
        /// The document.
        id: String,
        /// What it is.
        actual: String,
        /// What the caller asked for.
        expected: &'static str,
    },
    /// The edit breaks the record's field rules (the same rules the server runs).
    #[error("invalid record: {}", describe(.0))]
    Invalid(Vec<Violation>),
    /// The server refused a request.
    #[error("the server refused: {} ({})", .0.title, .0.status)]
    Refused(Box<Problem>),
    /// The server could not be reached, or the connection broke.
    #[error("network: {0}")]
    Network(String),
    /// The server did not finish the round in time.
    #[error("the server did not answer in time")]
    Timeout,
    /// The server spoke the protocol wrongly.
    #[error("protocol: {0}")]
    Protocol(String),
    /// automerge failed on a document.
    #[error("document: {0}")]
    Document(String),
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<automerge::AutomergeError> for DeviceError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Document(e.to_string())
    }
}

impl From<autosurgeon::HydrateError> for DeviceError {
    fn from(e: autosurgeon::HydrateError) -> Self {
        Self::Document(e.to_string())
    }
}

impl From<autosurgeon::ReconcileError> for DeviceError {
    fn from(e: autosurgeon::ReconcileError) -> Self {
        Self::Document(e.to_string())
    }
}

impl From<reqwest::Error> for DeviceError {
    fn from(e: reqwest::Error) -> Self {
        Self::Network(e.to_string())
    }
}

/// Who is logged in on this device, kept in `session.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    user_id: String,
    device_id: String,
    access_token: String,
    refresh_token: String,
    /// The automerge-repo peer id this device joins with (bound to user and device).
    peer_id: String,
    /// The automerge-repo storage id: the server keeps its sync state with this device under it.
    storage_id: String,
    /// The automerge actor of every change this device makes (hex).
    actor: String,
}

/// One document on the device.
struct Local {
    doc: AutoCommit,
    /// The sync state with the server; its `shared_heads` say what the server has acknowledged.
    state: sync::State,
}

impl Local {
    fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Whether the server has ever acknowledged this document.
    fn known_to_server(&self) -> bool {
        !self.state.shared_heads.is_empty()
    }

    /// Whether the server has acknowledged exactly this device's heads.
    fn acknowledged(&mut self) -> bool {
        let ours = self.doc.get_heads();
        !ours.is_empty() && same_heads(&ours, &self.state.shared_heads)
    }

    /// Whether this round has brought the device level with what the server says it has.
    fn level_with_server(&mut self) -> bool {
        let theirs = self.state.their_heads.clone().unwrap_or_default();
        same_heads(&self.doc.get_heads(), &theirs)
    }

    fn digest(&mut self) -> String {
        let heads: Vec<String> = self.heads().iter().map(ToString::to_string).collect();
        heads_digest(&heads)
    }
}

/// What a sync round did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Documents that arrived on this device for the first time.
    pub added: Vec<DocumentId>,
    /// Documents changed by someone else (or corrected by the server).
    pub changed: Vec<DocumentId>,
    /// Documents the user may no longer see, removed from this device.
    pub dropped: Vec<DocumentId>,
    /// Documents created here that the server will not take (it answered `doc-unavailable`).
    /// They stay on the device until the app discards them.
    pub rejected: Vec<DocumentId>,
    /// Documents whose local changes the server now holds.
    pub sent: Vec<DocumentId>,
    /// Commands the server answered (succeeded or refused for good).
    pub commands: Vec<CommandOutcome>,
    /// Commands still waiting (the server was unreachable or busy).
    pub pending_commands: usize,
}

/// The client a phone app embeds. One per local store; methods take `&mut self`, so the app
/// decides when edits and syncs happen.
pub struct Device {
    base: String,
    http: reqwest::Client,
    files: Files,
    session: Option<Session>,
    docs: HashMap<DocumentId, Local>,
    outbox: Outbox,
    /// How long a sync round may wait for the server's next message.
    pub idle_timeout: Duration,
}

impl Device {
    /// Opens the store in `dir` (created if missing) for the server at `base`
    /// (`http://host:port`). Loads every saved document and queued command.
    pub fn open(dir: impl AsRef<Path>, base: &str) -> Result<Self, DeviceError> {
        let files = Files::open(dir.as_ref())?;
        let session: Option<Session> = read_optional(&files.session())?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| DeviceError::Corrupt(format!("session.json: {e}")))
            })
            .transpose()?;
        let actor = session.as_ref().and_then(|s| parse_actor(&s.actor));
        let mut docs = HashMap::new();
        for id in files.document_ids()? {
            let bytes = std::fs::read(files.document(&id))?;
            let mut doc = records::load_document(&bytes)
                .map_err(|e| DeviceError::Corrupt(format!("document {id}: {e}")))?;
            if let Some(actor) = &actor {
                doc.set_actor(actor.clone());
            }
            let state = match read_optional(&files.sync_state(&id))? {
                Some(bytes) => sync::State::decode(&bytes)
                    .map_err(|e| DeviceError::Corrupt(format!("sync state {id}: {e}")))?,
                None => sync::State::new(),
            };
            docs.insert(id, Local { doc, state });
        }
        let outbox = Outbox::open(&files.outbox())?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            files,
            session,
            docs,
            outbox,
            idle_timeout: Duration::from_secs(30),
        })
    }

    /// The logged-in user's id.
    pub fn user_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.user_id.as_str())
    }

    /// This device's id on the server.
    pub fn device_id(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.device_id.as_str())
    }

    /// Logs in. The first login on a store registers the device (`POST /api/v1/devices`) and
    /// binds the session to it; later logins reuse that device. Fails with
    /// [`DeviceError::OtherUser`] when the store holds another user's data.
    pub async fn login(
        &mut self,
        login: &str,
        password: &str,
        device_name: &str,
        platform: &str,
    ) -> Result<(), DeviceError> {
        let known_device = self.session.as_ref().map(|s| s.device_id.clone());
        let device_id = match known_device {
            Some(id) => id,
            None => {
                let unbound = self.log_in(login, password, None).await?;
                let (status, body) = self
                    .send(
                        reqwest::Method::POST,
                        "/api/v1/devices",
                        &unbound.access_token,
                        Some(&json!({ "name": device_name, "platform": platform })),
                        None,
                    )
                    .await?;
                let device = refused_unless_ok(status, body)?;
                // The unbound session has served its purpose.
                let _ = self
                    .http
                    .post(format!("{}/api/v1/auth/logout", self.base))
                    .json(&json!({ "refresh_token": unbound.refresh_token }))
                    .send()
                    .await;
                device["id"]
                    .as_str()
                    .ok_or_else(|| DeviceError::Protocol("device registration without id".into()))?
                    .to_string()
            }
        };
        let tokens = self.log_in(login, password, Some(&device_id)).await?;
        let (status, me) = self
            .send(
                reqwest::Method::GET,
                "/api/v1/me",
                &tokens.access_token,
                None,
                None,
            )
            .await?;
        let me = refused_unless_ok(status, me)?;
        let user_id = me["user"]["id"]
            .as_str()
            .ok_or_else(|| DeviceError::Protocol("/me without id".into()))?
            .to_string();
        if let Some(previous) = &self.session
            && previous.user_id != user_id
        {
            return Err(DeviceError::OtherUser);
        }
        let session = match self.session.take() {
            Some(previous) => Session {
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
                ..previous
            },
            None => Session {
                user_id,
                peer_id: format!("outpost-device-{device_id}"),
                device_id,
                access_token: tokens.access_token,
                refresh_token: tokens.refresh_token,
                storage_id: uuid::Uuid::new_v4().to_string(),
                actor: ActorId::random().to_hex_string(),
            },
        };
        self.save_session(session)?;
        let actor = self.actor()?;
        for local in self.docs.values_mut() {
            local.doc.set_actor(actor.clone());
        }
        Ok(())
    }

    async fn log_in(
        &self,
        login: &str,
        password: &str,
        device_id: Option<&str>,
    ) -> Result<TokenPair, DeviceError> {
        let mut body = json!({ "login": login, "password": password });
        if let Some(device_id) = device_id {
            body["device_id"] = json!(device_id);
        }
        let response = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let body = refused_unless_ok(status, body)?;
        serde_json::from_value(body).map_err(|e| DeviceError::Protocol(e.to_string()))
    }

    fn save_session(&mut self, session: Session) -> Result<(), DeviceError> {
        let bytes =
            serde_json::to_vec_pretty(&session).map_err(|e| DeviceError::Corrupt(e.to_string()))?;
        write_atomic(&self.files.session(), &bytes)?;
        self.session = Some(session);
        Ok(())
    }

    fn session(&self) -> Result<&Session, DeviceError> {
        self.session.as_ref().ok_or(DeviceError::NotLoggedIn)
    }

    fn actor(&self) -> Result<ActorId, DeviceError> {
        parse_actor(&self.session()?.actor)
            .ok_or_else(|| DeviceError::Corrupt("session.json: actor".into()))
    }

    /// Trades the refresh token for a new pair (saved before it is used: the old refresh token
    /// is spent the moment the server answers).
    async fn refresh(&mut self) -> Result<(), DeviceError> {
        let refresh_token = self.session()?.refresh_token.clone();
        let response = self
            .http
            .post(format!("{}/api/v1/auth/refresh", self.base))
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 401 {
            return Err(DeviceError::SessionEnded(
                body["detail"].as_str().unwrap_or("refresh refused").into(),
            ));
        }
        let tokens: TokenPair = serde_json::from_value(refused_unless_ok(status, body)?)
            .map_err(|e| DeviceError::Protocol(e.to_string()))?;
        let mut session = self.session()?.clone();
        session.access_token = tokens.access_token;
        session.refresh_token = tokens.refresh_token;
        self.save_session(session)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), DeviceError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// An authenticated request, refreshing the access token once when it has expired.
    async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), DeviceError> {
        let token = self.session()?.access_token.clone();
        let (status, reply) = self
            .send(method.clone(), path, &token, body, idempotency_key)
            .await?;
        if status != 401 {
            return Ok((status, reply));
        }
        self.refresh().await?;
        let token = self.session()?.access_token.clone();
        self.send(method, path, &token, body, idempotency_key).await
    }

    // ----- documents -----

    /// Every document on the device with its record type.
    pub fn documents(&self) -> Vec<(DocumentId, String)> {
        let mut all: Vec<(DocumentId, String)> = self
            .docs
            .iter()
            .map(|(id, local)| (id.clone(), records::kind_of(&local.doc).unwrap_or_default()))
            .collect();
        all.sort();
        all
    }

    /// Every record of type `T` on the device.
    pub fn list<T: RecordType>(&self) -> Result<Vec<(DocumentId, T)>, DeviceError> {
        let mut all = Vec::new();
        for (id, kind) in self.documents() {
            if kind == T::KIND {
                all.push((id.clone(), self.get::<T>(&id)?));
            }
        }
        Ok(all)
    }

    /// Whether the device holds the document.
    pub fn has(&self, id: &DocumentId) -> bool {
        self.docs.contains_key(id)
    }

    /// The raw automerge document, for reading what typed accessors do not show.
    pub fn document(&self, id: &DocumentId) -> Option<&AutoCommit> {
        self.docs.get(id).map(|l| &l.doc)
    }

    /// A record as this device holds it.
    pub fn get<T: RecordType>(&self, id: &DocumentId) -> Result<T, DeviceError> {
        let local = self
            .docs
            .get(id)
            .ok_or_else(|| DeviceError::UnknownDocument(id.to_string()))?;
        let actual = records::kind_of(&local.doc).unwrap_or_default();
        if actual != T::KIND {
            return Err(DeviceError::WrongType {
                id: id.to_string(),
                actual,
                expected: T::KIND,
            });
        }
        Ok(autosurgeon::hydrate(&local.doc)?)
    }

    /// Creates a record offline; it reaches the server on the next sync. Saved before this
    /// returns. The server fills the server-owned fields (owner, state, who and when).
    pub fn create<T: RecordType>(&mut self, value: &T) -> Result<DocumentId, DeviceError> {
        let mut problems = value.validate();
        if value.server() != &ServerFields::default() {
            problems.push(Violation::new("server", "is written by the server only"));
        }
        if !problems.is_empty() {
            return Err(DeviceError::Invalid(problems));
        }
        let mut doc = records::new_document();
        doc.set_actor(self.actor()?);
        autosurgeon::reconcile(&mut doc, value)?;
        if records::kind_of(&doc).as_deref() != Some(T::KIND) {
            return Err(DeviceError::Invalid(vec![Violation::new(
                "type",
                format!("must be {}", T::KIND),
            )]));
        }
        let id = DocumentId::generate();
        let mut local = Local {
            doc,
            state: sync::State::new(),
        };
        write_atomic(&self.files.document(&id), &local.doc.save())?;
        self.docs.insert(id.clone(), local);
        Ok(id)
    }

    /// Edits a record offline: `edit` changes the typed value, the device checks the field rules
    /// (the server's own) and records the difference as one automerge change, saved before this
    /// returns. An edit that breaks a rule or touches a server-owned field changes nothing.
    pub fn update<T: RecordType>(
        &mut self,
        id: &DocumentId,
        edit: impl FnOnce(&mut T),
    ) -> Result<T, DeviceError> {
        let before: T = self.get(id)?;
        let mut after = before.clone();
        edit(&mut after);
        let mut problems = after.validate();
        if after.server() != before.server() {
            problems.push(Violation::new("server", "is written by the server only"));
        }
        if !problems.is_empty() {
            return Err(DeviceError::Invalid(problems));
        }
        if after == before {
            return Ok(after);
        }
        let actor = self.actor()?;
        let local = self
            .docs
            .get_mut(id)
            .ok_or_else(|| DeviceError::UnknownDocument(id.to_string()))?;
        let mut draft = local.doc.fork();
        draft.set_actor(actor);
        autosurgeon::reconcile(&mut draft, &after)?;
        let bytes = draft.save();
        // Only once the edit is on disk does the device's copy move on.
        write_atomic(&self.files.document(id), &bytes)?;
        local.doc.merge(&mut draft)?;
        Ok(after)
    }

    /// Removes a document from this device only (e.g. one the server rejected).
    pub fn discard(&mut self, id: &DocumentId) -> Result<(), DeviceError> {
        self.files.remove_document(id)?;
        self.docs.remove(id);
        Ok(())
    }

    // ----- commands -----

    /// Queues a command for the server (`POST <path>` with `body`), durably; it is sent on the
    /// next sync with an idempotency key fixed now, so it runs once however often it is sent.
    pub fn enqueue(&mut self, path: &str, body: Value) -> Result<Command, DeviceError> {
        self.outbox.push(path, body)
    }

    /// The commands waiting for the server.
    pub fn pending_commands(&self) -> &[Command] {
        self.outbox.pending()
    }

    // ----- sync -----

    /// One sync round (see the module doc). Safe to interrupt at any point: what was saved
    /// stays saved, and the next round resumes.
    pub async fn sync(&mut self) -> Result<SyncReport, DeviceError> {
        let mut report = SyncReport::default();
        self.sync_documents(&mut report).await?;
        let any_succeeded = self.send_commands(&mut report).await?;
        if any_succeeded {
            self.sync_documents(&mut report).await?;
        }
        report.pending_commands = self.outbox.pending().len();
        Ok(report)
    }

    /// Syncs every `every` until `stop` resolves, handing each round's result to `on_round`.
    /// A failed round (offline, server down) is retried at the next tick.
    pub async fn sync_every(
        &mut self,
        every: Duration,
        stop: impl std::future::Future<Output = ()>,
        mut on_round: impl FnMut(Result<SyncReport, DeviceError>),
    ) {
        tokio::pin!(stop);
        loop {
            let round = self.sync().await;
            on_round(round);
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    async fn manifest(&mut self) -> Result<Manifest, DeviceError> {
        let (status, body) = self
            .call(reqwest::Method::GET, "/api/v1/sync/manifest", None, None)
            .await?;
        let body = refused_unless_ok(status, body)?;
        serde_json::from_value(body).map_err(|e| DeviceError::Protocol(e.to_string()))
    }

    async fn sync_documents(&mut self, report: &mut SyncReport) -> Result<(), DeviceError> {
        let manifest = self.manifest().await?;
        let listed: HashMap<DocumentId, String> = manifest
            .documents
            .into_iter()
            .filter_map(|e| DocumentId::parse(&e.doc_id).map(|id| (id, e.heads_digest)))
            .collect();

        // What the server knew and no longer lists, this device may no longer see.
        let lost: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(id, local)| local.known_to_server() && !listed.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            self.discard(&id)?;
            report.dropped.push(id);
        }

        // Only what differs goes over the wire.
        let mut work: BTreeSet<DocumentId> = BTreeSet::new();
        for (id, local) in &mut self.docs {
            let behind = listed.get(id).is_some_and(|d| *d != local.digest());
            if behind || !local.acknowledged() {
                work.insert(id.clone());
            }
        }
        for id in listed.keys() {
            if !self.docs.contains_key(id) {
                work.insert(id.clone());
            }
        }
        if work.is_empty() {
            return Ok(());
        }

        let token = self.session()?.access_token.clone();
        let mut link = match Link::connect(&self.base, &token, self.session()?).await {
            Err(DeviceError::SessionEnded(_)) => {
                self.refresh().await?;
                let token = self.session()?.access_token.clone();
                Link::connect(&self.base, &token, self.session()?).await?
            }
            other => other?,
        };
        let result = self.exchange(&mut link, &work, report).await;
        link.leave().await;
        result
    }

    async fn exchange(
        &mut self,
        link: &mut Link,
        work: &BTreeSet<DocumentId>,
        report: &mut SyncReport,
    ) -> Result<(), DeviceError> {
        let actor = self.actor()?;
        let mut before: HashMap<DocumentId, Option<Vec<ChangeHash>>> = HashMap::new();
        let mut had_local_changes: BTreeSet<DocumentId> = BTreeSet::new();
        for id in work {
            match self.docs.get_mut(id) {
                Some(local) => {
                    before.insert(id.clone(), Some(local.heads()));
                    if !local.acknowledged() {
                        had_local_changes.insert(id.clone());
                    }
                    // Every round is a new connection: keep only what the server acknowledged
                    // (as a reload from disk would), not the last connection's in-flight flags.
                    let mut fresh = sync::State::new();
                    fresh.shared_heads = std::mem::take(&mut local.state.shared_heads);
                    local.state = fresh;
                    let message = local.doc.sync().generate_sync_message(&mut local.state);
                    link.sync(id, message, false).await?;
                }
                None => {
                    before.insert(id.clone(), None);
                    let mut doc = records::new_document();
                    doc.set_actor(actor.clone());
                    let mut local = Local {
                        doc,
                        state: sync::State::new(),
                    };
                    let message = local.doc.sync().generate_sync_message(&mut local.state);
                    self.docs.insert(id.clone(), local);
                    link.sync(id, message, true).await?;
                }
            }
        }
        let mut pending: BTreeSet<DocumentId> = work.clone();
        let mut unavailable: BTreeSet<DocumentId> = BTreeSet::new();
        let mut touched: BTreeSet<DocumentId> = BTreeSet::new();
        let outcome = loop {
            if pending.is_empty() {
                break Ok(());
            }
            let incoming = match link.next(self.idle_timeout).await {
                Ok(incoming) => incoming,
                Err(e) => break Err(e),
            };
            match incoming {
                link::Incoming::Sync { id, data } => {
                    let Some(local) = self.docs.get_mut(&id) else {
                        continue; // a push for a document this device does not hold
                    };
                    let message = match sync::Message::decode(&data) {
                        Ok(message) => message,
                        Err(e) => break Err(DeviceError::Protocol(e.to_string())),
                    };
                    if let Err(e) = local
                        .doc
                        .sync()
                        .receive_sync_message(&mut local.state, message)
                    {
                        break Err(DeviceError::Protocol(e.to_string()));
                    }
                    touched.insert(id.clone());
                    let reply = local.doc.sync().generate_sync_message(&mut local.state);
                    if let Err(e) = link.sync(&id, reply, false).await {
                        break Err(e);
                    }
                    if self.docs.get_mut(&id).is_some_and(Local::level_with_server) {
                        pending.remove(&id);
                    }
                }
                link::Incoming::Unavailable { id } => {
                    pending.remove(&id);
                    unavailable.insert(id);
                }
                link::Incoming::Error(message) => break Err(DeviceError::Protocol(message)),
            }
        };

        // Save what arrived even when the round broke off: document first, then sync state.
        for id in &touched {
            if unavailable.contains(id) {
                continue;
            }
            if let Some(local) = self.docs.get_mut(id) {
                if local.heads().is_empty() {
                    continue;
                }
                write_atomic(&self.files.document(id), &local.doc.save())?;
                write_atomic(&self.files.sync_state(id), &local.state.encode())?;
            }
        }
        for id in &unavailable {
            let was_ours = matches!(before.get(id), Some(Some(_)));
            let known = self.docs.get(id).is_some_and(Local::known_to_server);
            if !was_ours {
                self.docs.remove(id); // asked for it, the server has nothing to show
            } else if known {
                self.discard(id)?;
                report.dropped.push(id.clone());
            } else {
                report.rejected.push(id.clone());
            }
        }
        for id in &touched {
            if unavailable.contains(id) {
                continue;
            }
            let Some(local) = self.docs.get_mut(id) else {
                continue;
            };
            let now = local.heads();
            match before.get(id) {
                Some(None) if !now.is_empty() => report.added.push(id.clone()),
                Some(Some(earlier)) => {
                    if !same_heads(earlier, &now) {
                        report.changed.push(id.clone());
                    }
                    if had_local_changes.contains(id) && local.acknowledged() {
                        report.sent.push(id.clone());
                    }
                }
                _ => {}
            }
        }
        // Requested documents that never arrived leave no empty shell behind.
        self.docs
            .retain(|_, local| !local.doc.get_heads().is_empty() || local.known_to_server());
        outcome
    }

    async fn send_commands(&mut self, report: &mut SyncReport) -> Result<bool, DeviceError> {
        let mut any_succeeded = false;
        for command in self.outbox.pending().to_vec() {
            let (status, body) = match self
                .call(
                    reqwest::Method::POST,
                    &command.path,
                    Some(&command.body),
                    Some(&command.idempotency_key),
                )
                .await
            {
                Ok(answer) => answer,
                // Offline again: the rest waits for the next round, in order.
                Err(DeviceError::Network(_)) => break,
                Err(e) => return Err(e),
            };
            if status >= 500 || status == 408 || status == 429 || status == 401 {
                break;
            }
            let problem = (status >= 400)
                .then(|| serde_json::from_value::<Problem>(body.clone()).ok())
                .flatten();
            self.outbox.remove(command.sequence)?;
            any_succeeded |= (200..300).contains(&status);
            report.commands.push(CommandOutcome {
                command,
                status,
                body,
                problem,
            });
        }
        Ok(any_succeeded)
    }
}

/// Whether two sets of heads are the same, whatever their order.
fn same_heads(a: &[ChangeHash], b: &[ChangeHash]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

fn parse_actor(hex: &str) -> Option<ActorId> {
    ActorId::try_from(hex).ok()
}

/// The body of a 2xx answer, or the server's problem.
fn refused_unless_ok(status: u16, body: Value) -> Result<Value, DeviceError> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let problem = serde_json::from_value::<Problem>(body).unwrap_or(Problem {
        kind: "about:blank".into(),
        title: "unexpected answer".into(),
        status,
        detail: None,
        instance: None,
        errors: Vec::new(),
        extensions: serde_json::Map::new(),
    });
    if status == 401 {
        return Err(DeviceError::SessionEnded(
            problem.detail.unwrap_or(problem.title),
        ));
    }
    Err(DeviceError::Refused(Box::new(problem)))
}
