//! The command line: `outpost serve` and `outpost admin create`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::crm::identity::bootstrap;
use crate::crm::identity::model::RoleRow;
use crate::crm::identity::users::create_user_in;
use crate::crm::identity::validate;
use crate::platform::audit::AuditContext;
use crate::platform::auth::hash_password;
use crate::platform::db::{Query, Tx};
use crate::platform::ids;

/// Outpost, an offline-first CRM backend.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about)]
pub struct Cli {
    /// Configuration file; missing is fine (defaults apply).
    #[arg(
        long,
        global = true,
        default_value = "outpost.toml",
        env = "OUTPOST_CONFIG"
    )]
    pub config: PathBuf,
    /// Store URL: `surrealkv://DIR`, `mem://` or `ws://HOST:PORT`; overrides the config.
    #[arg(long, global = true)]
    pub db: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (default store: SurrealKV under ./data, address 127.0.0.1:8080).
    Serve {
        /// Address to listen on; overrides the config.
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Run job workers without HTTP (for deployments that separate workers from API nodes;
    /// set `jobs.workers = false` on those).
    Worker,
    /// Administration that runs against the store directly (stop the server first when it uses
    /// the embedded store).
    Admin {
        /// Which admin command.
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// Admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an admin. On an empty store this also creates the company and root department.
    Create {
        /// The admin's login email.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "Administrator")]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The server failed.
    #[error(transparent)]
    Start(#[from] crate::StartError),
    /// The command was refused.
    #[error("{0}")]
    Refused(String),
}

impl Cli {
    /// The effective configuration: file and environment, then flags.
    pub fn load_config(&self) -> Result<Config, CliError> {
        let mut config = Config::load(&self.config)?;
        if let Some(db) = &self.db {
            config.database.url = db.clone();
        }
        if let Command::Serve { bind: Some(bind) } = &self.command {
            config.server.bind = *bind;
        }
        Ok(config)
    }
}

/// Runs an admin command; `stdin` supplies the password, `out` gets the report. Returns once the
/// store is closed again.
pub async fn run_admin(
    config: &Config,
    command: &AdminCommand,
    stdin: &mut dyn BufRead,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let result = create_admin(config, command, stdin, out).await;
    crate::platform::db::await_store_closed(&config.database).await;
    result
}

async fn create_admin(
    config: &Config,
    command: &AdminCommand,
    stdin: &mut dyn BufRead,
    out: &mut dyn std::io::Write,
) -> Result<(), CliError> {
    let AdminCommand::Create {
        email,
        name,
        password_stdin: _,
    } = command;
    let mut password = String::new();
    stdin
        .read_line(&mut password)
        .map_err(|e| CliError::Refused(format!("cannot read the password: {e}")))?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    validate::password(&password, config.auth.min_password_length)
        .map_err(|m| CliError::Refused(format!("password {m}")))?;
    let email =
        validate::normalize_email(email).map_err(|m| CliError::Refused(format!("email {m}")))?;
    let name = validate::display_name(name).map_err(|m| CliError::Refused(format!("name {m}")))?;
    let db = crate::open_store(config).await?;
    let ctx = AuditContext::system("cli");
    let refused = |e: crate::error::ApiError| CliError::Refused(e.to_string());
    if !bootstrap::is_bootstrapped(&db)
        .await
        .map_err(crate::StartError::from)?
    {
        bootstrap::bootstrap(&db, config, &email, &name, Some(password), &ctx)
            .await
            .map_err(refused)?;
        writeln!(out, "created the company and its first admin {email}").ok();
        return Ok(());
    }
    let admin_role: Option<RoleRow> =
        Query::new("SELECT * FROM ONLY role WHERE name = 'admin' AND builtin = true LIMIT 1")
            .take(&db, 0)
            .await
            .map_err(|e| CliError::Refused(e.to_string()))?;
    let root: Option<String> =
        Query::new("SELECT VALUE record::id(id) FROM ONLY department WHERE parent = NONE LIMIT 1")
            .take(&db, 0)
            .await
            .map_err(|e| CliError::Refused(e.to_string()))?;
    let (Some(role), Some(root)) = (admin_role, root) else {
        return Err(CliError::Refused(
            "the store has no admin role or root department".into(),
        ));
    };
    let hash = hash_password(password).await.map_err(refused)?;
    let key = ids::new_key();
    let mut tx = Tx::new();
    create_user_in(
        &mut tx,
        &key,
        &name,
        Some(&email),
        None,
        &root,
        None,
        &[ids::key_of(&role.id)],
        "Asia/Shanghai",
        &hash,
    );
    tx.audit(
        &ctx,
        "user.create",
        Some(("user", &key)),
        serde_json::json!({ "email": email, "role": "admin" }),
    );
    tx.run(&db).await.map_err(|e| match e.thrown_message() {
        Some(m) if m.contains("login-taken") => {
            CliError::Refused(format!("{email} is already a user"))
        }
        _ => CliError::Start(e.into()),
    })?;
    writeln!(out, "created admin {email}").ok();
    Ok(())
}
