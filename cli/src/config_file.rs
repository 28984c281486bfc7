//! Reading the configuration file: TOML text into [`pomona::config::Config`].

use std::path::Path;

use anyhow::Context as _;
use pomona::config::Config;

/// Parse TOML text (`path` names it in errors).
pub fn parse(text: &str, path: &str) -> anyhow::Result<Config> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid config file {path}: {e}"))
}

/// Read a TOML file. Plugin paths in the file are relative to the file.
pub fn read(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut config = parse(&text, &path.display().to_string())?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut config.plugins {
        if p.path.is_relative() {
            p.path = base.join(&p.path);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::{parse, read};
    use pomona::config::*;
    use pomona::mdm::RenewalPolicy;

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("", "x").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.mdm.max_queue_len, 1000);
        c.validate().unwrap();
    }

    #[test]
    fn the_sample_configuration_parses() {
        let text = include_str!("../../examples/pomona.toml");
        let c = parse(text, "examples/pomona.toml").unwrap();
        c.validate().unwrap();
        assert_eq!(c.scep.challenge_ttl_secs, 3600);
        assert_eq!(c.setup.release_timeout_secs, 1800);
        assert_eq!(
            c.listener.options(),
            pomona::http::server::ListenerOptions::default(),
            "the sample shows the listener defaults"
        );
        assert_eq!(
            c.rate_limit.options(),
            pomona::http::rate_limit::RateLimitOptions::default(),
            "the sample shows the rate-limit defaults"
        );
        let apns = ApnsConfig::default();
        assert_eq!(
            (
                c.apns.connect_timeout_secs,
                c.apns.handshake_timeout_secs,
                c.apns.request_timeout_secs
            ),
            (
                apns.connect_timeout_secs,
                apns.handshake_timeout_secs,
                apns.request_timeout_secs
            )
        );
        let short = parse("[setup]\nrelease_timeout_secs = 90\n", "t").unwrap();
        assert_eq!(short.setup.release_timeout_secs, 90);
        assert!(parse("[setup]\nrelease_timeout = 90\n", "t").is_err());
        assert_eq!(c.plist_limits, Default::default());
    }

    #[test]
    fn plist_limits_are_configurable_and_checked() {
        let c = parse("[plist_limits]\nmax_depth = 32\nmax_values = 1000\n", "t").unwrap();
        assert_eq!(c.plist_limits.max_depth, 32);
        assert_eq!(c.plist_limits.max_values, 1000);
        assert_eq!(c.plist_limits.max_bytes, 32 << 20);
        c.validate().unwrap();
        let deep = parse("[plist_limits]\nmax_depth = 5000\n", "t").unwrap();
        let err = deep.validate().unwrap_err().to_string();
        assert!(
            err.contains("plist_limits") && err.contains("max_depth"),
            "{err}"
        );
        assert!(parse("[plist_limits]\ndepth = 3\n", "t").is_err());
    }

    #[test]
    fn proxies_listener_and_rate_limits() {
        let c = parse(
            "[identity]\nclient_cert_header = \"Client-Cert\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
             [listener]\nmax_connections = 10\nbody_read_timeout_secs = 5\n\
             [rate_limit]\nenroll_per_minute = 0\n\
             [apns]\nhandshake_timeout_secs = 3\n",
            "t",
        )
        .unwrap();
        c.validate().unwrap();
        let l = c.listener.options();
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.body_read_timeout, std::time::Duration::from_secs(5));
        assert_eq!(l.header_read_timeout, std::time::Duration::from_secs(15));
        assert_eq!(c.rate_limit.options().enroll.per_minute, 0);
        assert_eq!(c.rate_limit.options().scep.per_minute, 120);
        assert_eq!(c.apns.handshake_timeout_secs, 3);

        let bad = parse("[identity]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "t");
        let err = bad.unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        let nobody = parse(
            "[identity]\nclient_cert_header = \"X\"\ntrusted_proxies = []\n",
            "t",
        );
        let err = nobody.unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("trusted_proxies"), "{err}");
        let mut zero = Config::default();
        zero.listener.header_read_timeout_secs = 0;
        assert!(zero.validate().is_err());

        let mut env = Config::default();
        env.apply_env([(
            "POMONA_TRUSTED_PROXIES".to_string(),
            "10.0.0.1, fd00::/8".to_string(),
        )])
        .unwrap();
        assert_eq!(
            env.identity.trusted_proxies,
            Some(vec!["10.0.0.1".to_string(), "fd00::/8".to_string()])
        );
    }

    #[test]
    fn plugins_are_declared_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pomona.toml");
        std::fs::write(
            &file,
            r#"
            [plugin_limits]
            timeout = 20

            [[plugins]]
            name = "teams"
            path = "plugins/teams.lua"
            hooks = ["place"]
            config = { default = "Mac fleet" }
            limits = { instructions = 1000 }

            [[plugins]]
            name = "abs"
            path = "/opt/abs.wasm"
            "#,
        )
        .unwrap();
        let c = read(&file).unwrap();
        assert_eq!(
            c.plugin_limits.timeout,
            std::time::Duration::from_millis(20)
        );
        assert_eq!(c.plugins[0].path, dir.path().join("plugins/teams.lua"));
        assert_eq!(c.plugins[0].hooks, Some(vec![pomona::policy::Hook::Place]));
        assert_eq!(c.plugins[0].config["default"], "Mac fleet");
        assert_eq!(c.plugins[0].limits.unwrap().instructions, 1000);
        assert_eq!(c.plugins[1].path, std::path::PathBuf::from("/opt/abs.wasm"));
        let bad = parse(
            "[[plugins]]\nname = \"x\"\npath = \"a\"\nhook = [\"place\"]",
            "f.toml",
        );
        assert!(bad.unwrap_err().to_string().contains("hook"));
    }

    #[test]
    fn file_then_env() {
        let mut c = parse(
            "public_url = \"https://mdm.example.com\"\n[identity]\nclient_cert_header = \"X-Client\"\nrenewal = \"any\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.identity.renewal, RenewalPolicy::Any);
        c.apply_env([
            ("POMONA_LISTEN".to_string(), "0.0.0.0:8443".to_string()),
            ("POMONA_API_KEY".to_string(), "k".repeat(20)),
            ("HOME".to_string(), "/root".to_string()),
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.public_url, "https://mdm.example.com");
        assert_eq!(c.identity.client_cert_header.as_deref(), Some("X-Client"));
        assert!(c.api.key.is_some());
    }

    #[test]
    fn precise_errors() {
        let err = parse("listen = 5", "pomona.toml").unwrap_err().to_string();
        assert!(err.starts_with("invalid config file pomona.toml:"), "{err}");
        let err = parse("bogus = 1", "p").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env([("POMONA_LISTEN".to_string(), "nope".to_string())])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid value for POMONA_LISTEN")
        );
        c.public_url = "ftp://x".into();
        assert!(c.validate().is_err());
    }
}
