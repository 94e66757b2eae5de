//! A process that the migration crash test kills with SIGKILL in the middle of an upgrade: it
//! opens the store at `URL` and applies every migration, printing the runner's log on stdout.
//! Once the runner reports its first committed backfill slice, the log writer stops the runner
//! right there (the report is written from the runner's own thread, after the commit and
//! before the next slice), so the kill always lands between slices.
//!
//! `migrate_crash URL`

use std::io::Write;

use outpost::config::Config;
use outpost::platform::db::{Db, MIGRATIONS, apply_migrations};

/// Stdout that never returns from the write of the first committed slice's report.
struct StopAfterFirstSlice;

impl Write for StopAfterFirstSlice {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = std::io::stdout();
        out.write_all(buf)?;
        out.flush()?;
        if String::from_utf8_lossy(buf).contains("backfill slice committed") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

#[tokio::main]
async fn main() {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: migrate_crash URL");
        std::process::exit(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter("warn,outpost::platform::db::migrations=debug")
        .with_ansi(false)
        .with_writer(|| StopAfterFirstSlice)
        .init();
    let db = Db::connect(&Config::for_database(&url).database)
        .await
        .expect("the store opens");
    apply_migrations(&db, MIGRATIONS)
        .await
        .expect("the migrations apply");
    println!("migrated");
}
