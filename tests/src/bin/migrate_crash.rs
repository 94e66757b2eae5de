//! A process that the migration crash test kills with SIGKILL in the middle of an upgrade: it
//! opens the store at `URL`, applies every migration, and prints the runner's progress (one
//! line per committed backfill slice) on stdout, so the test knows when to kill it.
//!
//! `migrate_crash URL`

use outpost::config::Config;
use outpost::platform::db::{Db, MIGRATIONS, apply_migrations};

#[tokio::main]
async fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: migrate_crash URL");
        std::process::exit(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter("warn,outpost::platform::db::migrations=debug")
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();
    let db = Db::connect(&Config::for_database(&url).database)
        .await
        .expect("the store opens");
    apply_migrations(&db, MIGRATIONS)
        .await
        .expect("the migrations apply");
    println!("migrated");
}
