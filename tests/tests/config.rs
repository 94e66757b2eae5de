//! Configuration: defaults, `outpost.toml`, `OUTPOST__SECTION__KEY` overrides, redacted secrets.

use outpost::config::{Config, Secret};

#[test]
fn defaults_file_then_environment_and_secrets_are_redacted() {
    figment::Jail::expect_with(|jail| {
        let defaults = Config::load(std::path::Path::new("missing.toml")).expect("no file is fine");
        assert_eq!(defaults.database.url, "surrealkv://data");
        assert_eq!(defaults.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (defaults.database.cache_mib, defaults.database.memtable_mib),
            (256, 512),
            "the embedded store's memory is capped out of the box"
        );
        assert_eq!(defaults.database.block_kib, 4);
        assert_eq!(defaults.database.unresponsive_exit_secs, 120);

        jail.create_file(
            "outpost.toml",
            r#"
            [server]
            max_body_bytes = 4096
            [database]
            cache_mib = 64
            [auth]
            jwt_secret = "file-secret-value"
            [bootstrap]
            company_name = "北京示例科技有限公司"
            "#,
        )?;
        jail.set_env("OUTPOST__SERVER__MAX_BODY_BYTES", "8192");
        jail.set_env("OUTPOST__DATABASE__PASSWORD", "env-db-password");
        jail.set_env("OUTPOST__DATABASE__MEMTABLE_MIB", "32");
        let config = Config::load(std::path::Path::new("outpost.toml")).expect("loads");
        assert_eq!(
            config.server.max_body_bytes, 8192,
            "the environment wins over the file"
        );
        assert_eq!(config.bootstrap.company_name, "北京示例科技有限公司");
        assert_eq!(
            (config.database.cache_mib, config.database.memtable_mib),
            (64, 32)
        );
        assert_eq!(
            config.auth.jwt_secret,
            Some(Secret::new("file-secret-value"))
        );
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("file-secret-value") && !printed.contains("env-db-password"),
            "{printed}"
        );
        assert!(printed.contains("[redacted]"));

        jail.create_file("bad.toml", "[server]\nmax_body_bytse = 1\n")?;
        let err =
            Config::load(std::path::Path::new("bad.toml")).expect_err("unknown keys are refused");
        assert!(err.to_string().contains("max_body_bytse"), "{err}");
        Ok(())
    });
}

#[test]
fn schedules_are_checked_at_load_and_the_digest_and_pool_sweep_may_be_off() {
    figment::Jail::expect_with(|jail| {
        let defaults = Config::load(std::path::Path::new("missing.toml")).expect("defaults");
        assert_eq!(
            (
                defaults.jobs.digest_schedule.as_str(),
                defaults.jobs.pool_sweep_schedule.as_str()
            ),
            (
                outpost::crm::digest::SCHEDULE,
                outpost::crm::pool::returns::SCHEDULE
            )
        );
        jail.create_file(
            "off.toml",
            "[jobs]\ndigest_schedule = \"\"\npool_sweep_schedule = \"0 0 2 * * *\"\n",
        )?;
        let off = Config::load(std::path::Path::new("off.toml")).expect("empty turns it off");
        assert!(off.jobs.digest_schedule.is_empty());
        assert_eq!(off.jobs.pool_sweep_schedule, "0 0 2 * * *");
        for (file, key) in [
            (
                "[jobs]\ndigest_schedule = \"every morning\"\n",
                "jobs.digest_schedule",
            ),
            (
                "[jobs]\npool_sweep_schedule = \"*/10 * * * *\"\n",
                "jobs.pool_sweep_schedule",
            ),
            (
                "[jobs]\nhousekeeping_schedule = \"\"\n",
                "jobs.housekeeping_schedule",
            ),
            (
                "[jobs]\npool_sweep_schedule = \"0 0 0 30 2 *\"\n",
                "never fires",
            ),
        ] {
            jail.create_file("bad.toml", file)?;
            let err = Config::load(std::path::Path::new("bad.toml")).expect_err(file);
            assert!(err.to_string().contains(key), "{file}: {err}");
        }
        jail.set_env("OUTPOST__JOBS__DIGEST_SCHEDULE", "0 0 25 * * *");
        let err = Config::load(std::path::Path::new("missing.toml")).expect_err("hour 25");
        assert!(err.to_string().contains("jobs.digest_schedule"), "{err}");
        Ok(())
    });
}
