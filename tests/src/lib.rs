//! Test support: boots the real Outpost server on `127.0.0.1:0` and talks to it over HTTP the
//! way a phone or a browser would.

use outpost::Server;
use outpost::config::Config;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// A server started for one test, with its first admin's credentials.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The first admin's login.
    pub admin_login: String,
    /// The first admin's generated password (empty when the store already had an admin).
    pub admin_password: String,
    /// The HTTP client.
    pub http: reqwest::Client,
    server: Option<Server>,
}

/// An HTTP response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Reply {
    /// The problem `type` slug, e.g. `validation` for `urn:outpost:problem:validation`.
    pub fn problem(&self) -> String {
        self.body["type"]
            .as_str()
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl TestServer {
    /// A server on a fresh in-memory store.
    pub async fn start() -> Self {
        Self::start_with(Config::for_database("mem://")).await
    }

    /// A server with the given configuration (its bind address is ignored: always port 0).
    ///
    /// Its morning digest cron is off unless `config` sets a schedule of its own: on the
    /// system clock the default sends a digest at every quarter hour past 08:00 local, which
    /// would land in whatever a test counts. The digest test runs the digest's sweep itself.
    pub async fn start_with(mut config: Config) -> Self {
        if config.jobs.digest_schedule == outpost::crm::digest::SCHEDULE {
            config.jobs.digest_schedule = String::new();
        }
        Self::start_with_clock(config, outpost::platform::clock::Clock::system()).await
    }

    /// A server whose jobs and digests go by `clock`, which the test moves forward.
    pub async fn start_with_clock(config: Config, clock: outpost::platform::clock::Clock) -> Self {
        init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin_login = config.bootstrap.admin_email.clone();
        let server = outpost::start_with_clock(config, listener, clock)
            .await
            .expect("server starts");
        let admin_password = server
            .generated_admin
            .as_ref()
            .map(|a| a.password.clone())
            .unwrap_or_default();
        Self {
            base: format!("http://{}", server.addr),
            admin_login,
            admin_password,
            http: reqwest::Client::new(),
            server: Some(server),
        }
    }

    /// A second node on this server's store, the way a second `outpost` process shares a
    /// SurrealDB cluster: it has its own sync engine, document cache and locks, and no job
    /// workers (jobs run on this one). `config` gives its other settings.
    pub async fn another_node(&self, mut config: Config) -> Self {
        config.jobs.workers = false;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = outpost::start_node(
            config,
            listener,
            outpost::platform::clock::Clock::system(),
            self.db(),
        )
        .await
        .expect("node starts");
        Self {
            base: format!("http://{}", server.addr),
            admin_login: self.admin_login.clone(),
            admin_password: self.admin_password.clone(),
            http: reqwest::Client::new(),
            server: Some(server),
        }
    }

    /// The server's store (drop clones before [`TestServer::shutdown`] on `surrealkv://`).
    pub fn db(&self) -> outpost::platform::db::Db {
        self.server
            .as_ref()
            .and_then(Server::db)
            .expect("a running server")
    }

    /// Stops the server gracefully.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// Sends a request; `token` is the bearer token, `body` JSON.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET` with a token.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send("GET", path, Some(token), None, &[]).await
    }

    /// `POST` JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send("POST", path, Some(token), Some(body), &[]).await
    }

    /// `PATCH` JSON with a token.
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send("PATCH", path, Some(token), Some(body), &[]).await
    }

    /// `DELETE` with a token.
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.send("DELETE", path, Some(token), None, &[]).await
    }

    /// Tries to log in, whatever the outcome.
    pub async fn try_login(
        &self,
        login: impl serde::Serialize,
        password: impl serde::Serialize,
    ) -> Reply {
        self.send(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "login": login, "password": password })),
            &[],
        )
        .await
    }

    /// Logs in; panics unless it succeeds. Returns the token pair body.
    pub async fn login(&self, login: &str, password: &str) -> Value {
        let reply = self
            .send(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({ "login": login, "password": password })),
                &[],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "login of {login} failed: {:?}",
            reply.body
        );
        reply.body
    }

    /// The caller's notifications, digests included (`query` is the list's query string,
    /// e.g. `limit=50`).
    pub async fn all_notifications(&self, token: &str, query: &str) -> Vec<Value> {
        let reply = self
            .get(&format!("/api/v1/notifications?{query}"), token)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["items"].as_array().cloned().unwrap_or_default()
    }

    /// The caller's notifications without morning digests: on the system clock, a digest
    /// sweep runs every quarter of an hour and sends one to every user whose local time is
    /// past 08:00, so a test that spans a quarter-hour would find one beside the
    /// notifications it made.
    pub async fn notifications(&self, token: &str, query: &str) -> Vec<Value> {
        let mut items = self.all_notifications(token, query).await;
        items.retain(|n| n["kind"] != "digest");
        items
    }

    /// The first admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(&self.admin_login, &self.admin_password).await["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// The id of the root department.
    pub async fn root_department(&self, token: &str) -> String {
        let list = self.get("/api/v1/departments?limit=200", token).await;
        list.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items: {:?}", list.body))
            .iter()
            .find(|d| d["parent_id"].is_null())
            .expect("root")["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// The id of a built-in role by name.
    pub async fn role(&self, token: &str, name: &str) -> String {
        let list = self.get("/api/v1/roles?limit=200", token).await;
        list.body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("no items: {:?}", list.body))
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("role {name}"))["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    /// Creates a department under `parent`; returns its id.
    pub async fn department(&self, token: &str, name: &str, parent: &str) -> String {
        let reply = self
            .post(
                "/api/v1/departments",
                token,
                json!({ "name": name, "parent_id": parent }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().expect("id").to_string()
    }

    /// Creates a user with a known password; returns its id.
    pub async fn user(
        &self,
        token: &str,
        email: &str,
        department: &str,
        manager: Option<&str>,
        roles: &[&str],
    ) -> String {
        let reply = self
            .post(
                "/api/v1/users",
                token,
                json!({ "email": email, "name": email.split('@').next(), "department_id": department,
                        "manager_id": manager, "role_ids": roles, "password": PASSWORD }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().expect("id").to_string()
    }

    /// An access token for a user created with [`TestServer::user`].
    pub async fn token_of(&self, email: &str) -> String {
        self.login(email, PASSWORD).await["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }
}

/// The password of users created by [`TestServer::user`].
pub const PASSWORD: &str = "correct horse battery";

/// Server logs in test output: errors by default, more with `RUST_LOG`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A minimal automerge-repo protocol client over a real WebSocket, the way a phone's sync
/// client talks to `/sync`.
pub mod sync_client {
    use std::collections::HashMap;
    use std::time::Duration;

    use automerge::AutoCommit;
    use automerge::sync::{self, SyncDoc};
    use futures_util::{SinkExt, StreamExt};
    use outpost_sync::DocumentId;
    use outpost_sync::protocol::{Message, PeerMetadata, decode, encode};
    use serde_bytes::ByteBuf;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// One connected peer.
    pub struct SyncClient {
        socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
        /// This client's peer id.
        pub peer_id: String,
        /// The server's peer id.
        pub server_id: String,
        docs: HashMap<String, (AutoCommit, sync::State)>,
        /// Documents the server said it does not have (or will not show).
        pub unavailable: Vec<String>,
        /// `error` messages received.
        pub errors: Vec<String>,
        /// Whether the server closed the connection.
        pub closed: bool,
        /// Frames and bytes this client sent.
        pub sent: (usize, usize),
        /// Frames and bytes this client received.
        pub received: (usize, usize),
    }

    impl SyncClient {
        /// Connects with a bearer token and completes the handshake.
        pub async fn connect(
            base: &str,
            token: &str,
            peer_id: &str,
            storage_id: Option<&str>,
        ) -> Self {
            let url = format!("{}/sync?token={token}", base.replace("http://", "ws://"));
            let (socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("websocket upgrade");
            let mut client = Self {
                socket,
                peer_id: peer_id.into(),
                server_id: String::new(),
                docs: HashMap::new(),
                unavailable: Vec::new(),
                errors: Vec::new(),
                closed: false,
                sent: (0, 0),
                received: (0, 0),
            };
            client
                .send(&Message::Join {
                    sender_id: peer_id.into(),
                    supported_protocol_versions: Some(vec!["1".into()]),
                    peer_metadata: Some(PeerMetadata {
                        storage_id: storage_id.map(str::to_string),
                        is_ephemeral: storage_id.is_none(),
                    }),
                })
                .await;
            match client.next().await {
                Some(Message::Peer {
                    sender_id,
                    target_id,
                    ..
                }) => {
                    assert_eq!(target_id, peer_id);
                    client.server_id = sender_id;
                }
                other => panic!("expected peer, got {other:?}"),
            }
            client
        }

        /// Sends raw bytes (for hostile-input tests).
        pub async fn send_raw(&mut self, bytes: Vec<u8>) {
            self.sent.0 += 1;
            self.sent.1 += bytes.len();
            let _ = self.socket.send(Ws::Binary(bytes.into())).await;
        }

        /// Sends a message.
        pub async fn send(&mut self, message: &Message) {
            self.send_raw(encode(message)).await;
        }

        /// The next protocol message, or `None` when the connection is idle for a while or closed.
        pub async fn next(&mut self) -> Option<Message> {
            self.next_within(Duration::from_millis(700)).await
        }

        /// The next protocol message within `wait`.
        pub async fn next_within(&mut self, wait: Duration) -> Option<Message> {
            loop {
                let frame = tokio::time::timeout(wait, self.socket.next()).await.ok()?;
                match frame {
                    Some(Ok(Ws::Binary(bytes))) => {
                        self.received.0 += 1;
                        self.received.1 += bytes.len();
                        return Some(decode(&bytes, usize::MAX).expect("server frames decode"));
                    }
                    Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => {
                        self.closed = true;
                        return None;
                    }
                    Some(Ok(_)) => continue,
                }
            }
        }

        /// Adds a document created offline; returns its id.
        pub fn insert(&mut self, doc: AutoCommit) -> DocumentId {
            let id = DocumentId::generate();
            self.docs.insert(id.to_string(), (doc, sync::State::new()));
            id
        }

        /// The local copy of a document.
        pub fn doc(&mut self, id: &DocumentId) -> &mut AutoCommit {
            &mut self.docs.get_mut(id.as_str()).expect("known document").0
        }

        /// Whether the client holds a copy of the document.
        pub fn has(&self, id: &DocumentId) -> bool {
            self.docs.contains_key(id.as_str())
        }

        /// Asks the server for a document the client does not have.
        pub async fn request(&mut self, id: &DocumentId) {
            self.docs
                .entry(id.to_string())
                .or_insert_with(|| (outpost_mobile::records::new_document(), sync::State::new()));
            let (doc, state) = self.docs.get_mut(id.as_str()).expect("inserted");
            let data = doc
                .sync()
                .generate_sync_message(state)
                .map(|m| m.encode())
                .unwrap_or_default();
            let message = Message::Request {
                document_id: id.to_string(),
                sender_id: self.peer_id.clone(),
                target_id: self.server_id.clone(),
                data: ByteBuf::from(data),
            };
            self.send(&message).await;
        }

        /// Sends what the server is missing of a document, if anything.
        pub async fn push(&mut self, id: &DocumentId) {
            let (doc, state) = self.docs.get_mut(id.as_str()).expect("known document");
            let generated = doc.sync().generate_sync_message(state);
            if let Some(message) = generated {
                let message = Message::Sync {
                    document_id: id.to_string(),
                    sender_id: self.peer_id.clone(),
                    target_id: self.server_id.clone(),
                    data: ByteBuf::from(message.encode()),
                };
                self.send(&message).await;
            }
        }

        /// Exchanges sync messages until the server has acknowledged every document this client
        /// holds (completion is read from the sync states, not guessed from silence), then
        /// drains whatever else is in flight.
        pub async fn settle(&mut self) {
            let ids: Vec<String> = self.docs.keys().cloned().collect();
            for id in &ids {
                if let Some(id) = DocumentId::parse(id) {
                    self.push(&id).await;
                }
            }
            let mut pending = ids;
            pending.retain(|id| !self.is_synced(id));
            while !pending.is_empty() {
                let Some(message) = self.next_within(Duration::from_secs(30)).await else {
                    break;
                };
                self.handle(message).await;
                pending.retain(|id| !self.is_synced(id));
            }
            while let Some(message) = self.next_within(Duration::from_millis(200)).await {
                self.handle(message).await;
            }
        }

        /// Processes what the server sends, without sending first, until the connection goes
        /// quiet: proves that changes are pushed, not polled for.
        pub async fn listen(&mut self) {
            while let Some(message) = self.next().await {
                self.handle(message).await;
            }
        }

        /// Whether the server has acknowledged exactly this client's heads of the document.
        pub fn is_synced(&mut self, id: &str) -> bool {
            let Some((doc, state)) = self.docs.get_mut(id) else {
                return true;
            };
            let mut ours = doc.get_heads();
            ours.sort();
            let mut theirs = state.their_heads.clone().unwrap_or_default();
            theirs.sort();
            ours == theirs && !ours.is_empty()
        }

        /// Pushes every document and exchanges messages until the server holds all of them
        /// (no idle waiting: completion is detected from the sync states). Panics after 120 s.
        pub async fn sync_all(&mut self) {
            let ids: Vec<String> = self.docs.keys().cloned().collect();
            for id in &ids {
                if let Some(id) = DocumentId::parse(id) {
                    self.push(&id).await;
                }
            }
            let mut pending: Vec<String> = ids;
            while !pending.is_empty() {
                let message = self
                    .next_within(Duration::from_secs(120))
                    .await
                    .expect("the server answers");
                self.handle(message).await;
                pending.retain(|id| !self.is_synced(id));
            }
        }

        async fn handle(&mut self, message: Message) {
            match message {
                Message::Sync {
                    document_id, data, ..
                }
                | Message::Request {
                    document_id, data, ..
                } => {
                    let (doc, state) = self.docs.entry(document_id.clone()).or_insert_with(|| {
                        (outpost_mobile::records::new_document(), sync::State::new())
                    });
                    let message =
                        sync::Message::decode(&data).expect("server sync messages decode");
                    doc.sync()
                        .receive_sync_message(state, message)
                        .expect("applies");
                    if let Some(id) = DocumentId::parse(&document_id) {
                        self.push(&id).await;
                    }
                }
                Message::DocUnavailable { document_id, .. } => {
                    self.docs.remove(&document_id);
                    self.unavailable.push(document_id);
                }
                Message::Error { message, .. } => self.errors.push(message),
                _ => {}
            }
        }
    }
}

/// Helpers the benchmark binaries share.
pub mod bench {
    use std::time::Duration;

    /// A field of `/proc/self/status` in MiB (`VmRSS:` now, `VmHWM:` the peak).
    pub fn memory_mib(field: &str) -> f64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with(field)).map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .unwrap_or("0")
                        .parse::<f64>()
                        .unwrap_or(0.0)
                })
            })
            .unwrap_or(0.0)
            / 1024.0
    }

    /// CPU time this process has used, user and system, in seconds (Linux's `/proc`, whose
    /// clock ticks are 1/100 s).
    pub fn cpu_seconds() -> f64 {
        std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                // Fields after the command name (which may hold spaces) and its `)`.
                let rest = s.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let user: f64 = fields.get(11)?.parse().ok()?;
                let system: f64 = fields.get(12)?.parse().ok()?;
                Some((user + system) / 100.0)
            })
            .unwrap_or(0.0)
    }

    /// Bytes this process has read from and written to storage so far (`read_bytes` and
    /// `write_bytes` of Linux's `/proc/self/io`): what a store's commits, flushes and merges cost
    /// in I/O.
    pub fn io_bytes() -> (u64, u64) {
        let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("read_bytes:"), field("write_bytes:"))
    }

    /// Waits (at most `limit`) until the process has stayed nearly idle for three seconds in a
    /// row, and says how long that took. A store that was just loaded or reopened merges its
    /// files in the background on the same cores the measured requests use; timing requests
    /// during that merge measures the merge.
    ///
    /// "Nearly idle" is under 15% of a core: an idle server's job workers poll their queues
    /// (seven queues, every 200 ms, about 1.5 ms a poll on a 100k store), which a tighter bound
    /// mistook for work and waited on for its whole limit.
    pub async fn settle(limit: Duration) -> Duration {
        let started = std::time::Instant::now();
        let mut quiet = 0;
        let mut last = cpu_seconds();
        while quiet < 3 && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = cpu_seconds();
            quiet = if now - last < 0.15 { quiet + 1 } else { 0 };
            last = now;
        }
        started.elapsed()
    }

    /// The `p` percentile (0 to 1) of sorted durations.
    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// Percent-encodes a query-string value (everything but ASCII letters and digits).
pub fn query_value(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
