//! The `pomona` binary's command line: help, and precise errors for bad input.
//!
//! Having an integration test here also makes `cargo test --workspace` build
//! `target/debug/pomona`, which the testkit's end-to-end tests start as a child process.

use std::process::{Command, Output};

fn pomona(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(args)
        .env_remove("POMONA_API_KEY")
        .env_remove("POMONA_URL")
        .output()
        .expect("run pomona")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_subcommand() {
    let out = pomona(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "dep", "push"] {
        assert!(text.contains(sub), "`{sub}` missing from help:\n{text}");
    }
}

#[test]
fn a_missing_config_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = pomona(&["serve", "--config", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));
}

#[test]
fn a_malformed_config_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pomona.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, "listen = [not toml").unwrap();
    let out = pomona(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pomona.toml"), "{}", stderr(&out));
    assert!(
        !data.exists(),
        "a refused start must not create the data directory"
    );
}

#[test]
fn dep_commands_need_an_api_key() {
    let out = pomona(&["dep", "servers", "--url", "http://127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--api-key"), "{}", stderr(&out));
}

#[test]
fn dep_commands_name_the_engine_they_could_not_reach() {
    let out = pomona(&[
        "dep",
        "servers",
        "--url",
        "http://127.0.0.1:9",
        "--api-key",
        "k",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("http://127.0.0.1:9/v1/dep/servers"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_team_flag_is_explained() {
    let out = pomona(&["dep", "set", "hq", "--team", "macos", "--api-key", "k"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("PLATFORM=TEAM"), "{}", stderr(&out));
}
