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
    pub async fn start_with(config: Config) -> Self {
        init_logging();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin_login = config.bootstrap.admin_email.clone();
        let server = outpost::start(config, listener)
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
