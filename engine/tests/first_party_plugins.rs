//! Snapshot tests of the first-party policy plugins, the Lua template and the Lua editor stubs.
//!
//! Every folder `plugins/<name>/` with a `fixtures/` folder is a plugin under test, and so is the
//! template in `examples/plugin-lua/`. Its artifact is `plugins/<name>/<name>.lua`, else
//! `plugins/dist/<name>.wasm` (built from Rust); the template's is `my-policy.lua`.
//!
//! `fixtures/` is a fixture set, and so is each folder below it (say `fixtures/hold/`, to test
//! another configuration). A set holds `config.json` (the plugin configuration: a JSON object of
//! string values; absent means none), any number of `<hook>.json` (a JSON array of input records
//! for that hook) and, for each, `<hook>.expected.jsonl`: the lines `pomona plugin test` prints.
//!
//! For each `<hook>.json` the test loads the plugin with the set's configuration and default
//! limits, runs the records through [`pomona::policy::fixture`] and compares the result with the
//! snapshot line by line. It also checks that the plugin implements the hook, that no record makes
//! the plugin fail (only malformed fixture records may give an error line), and, for Lua, that the
//! plugin gives the same lines in strict mode, where reading or assigning an undefined global
//! raises an error.
//!
//! `POMONA_UPDATE_SNAPSHOTS=1 cargo test -p pomona --test first_party_plugins` rewrites the
//! snapshots instead of comparing; review the diff before committing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use pomona::policy::{
    AccountStep, CommandStep, Decision, DepEvent, Device, Hook, Limits, PackageStep, PluginConfig,
    PluginError, Progress, StepProgress, UserIdentity, fixture, loader, steps_from_json,
};

/// The least number of first-party plugins the test must find, so it cannot pass vacuously.
const MIN_FIRST_PARTY: usize = 3;

/// Makes every read or assignment of an undefined global an error. Prepended to the first line
/// of a Lua plugin, so line numbers in messages stay right.
const STRICT_GLOBALS: &str = "setmetatable(_G, { \
    __newindex = function(_, k) error('assignment to undefined global ' .. tostring(k), 2) end, \
    __index = function(_, k) error('read of undefined global ' .. tostring(k), 2) end }) ";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the engine lives in the repository")
        .to_owned()
}

/// `path` relative to the repository, for messages.
fn rel(path: &Path) -> String {
    let root = repo();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A plugin to test: its name, its folder, and where its artifact is (or why there is none).
struct UnderTest {
    name: String,
    dir: PathBuf,
    artifact: Result<PathBuf, String>,
}

/// Every folder of `plugins/` with a `fixtures/` folder, sorted by name.
fn first_party() -> Vec<UnderTest> {
    let plugins = repo().join("plugins");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&plugins)
        .unwrap_or_else(|e| panic!("reading {}: {e}", plugins.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.join("fixtures").is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let name = dir
                .file_name()
                .expect("a folder name")
                .to_string_lossy()
                .into_owned();
            let lua = dir.join(format!("{name}.lua"));
            let wasm = plugins.join("dist").join(format!("{name}.wasm"));
            let artifact = if lua.is_file() {
                Ok(lua)
            } else if wasm.is_file() {
                Ok(wasm)
            } else {
                Err(format!(
                    "{} has fixtures but no plugin: neither {} nor {} exists \
                     (a WASM plugin must be built into plugins/dist first)",
                    rel(&dir),
                    rel(&lua),
                    rel(&wasm)
                ))
            };
            UnderTest {
                name,
                dir,
                artifact,
            }
        })
        .collect()
}

/// The template custom plugin.
fn template() -> UnderTest {
    let dir = repo().join("examples").join("plugin-lua");
    UnderTest {
        name: "my-policy".into(),
        artifact: Ok(dir.join("my-policy.lua")),
        dir,
    }
}

/// `dir` and every folder below it, sorted.
fn fixture_sets(dir: &Path) -> Vec<PathBuf> {
    let mut sets = vec![dir.to_owned()];
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    children.sort();
    for child in children {
        sets.extend(fixture_sets(&child));
    }
    sets
}

fn read_config(set: &Path) -> Result<PluginConfig, String> {
    let path = set.join("config.json");
    if !path.exists() {
        return Ok(PluginConfig::new());
    }
    let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", rel(&path)))?;
    let map: serde_json::Map<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a JSON object: {e}", rel(&path)))?;
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(format!(
                "{}: value of {k:?} must be a string, got {other}",
                rel(&path)
            )),
        })
        .collect()
}

/// The `<hook>.json` files of a set, sorted, with their hook.
fn hook_fixtures(set: &Path) -> Result<Vec<(Hook, PathBuf)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(set)
        .map_err(|e| format!("reading {}: {e}", rel(set)))?
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "config.json")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let stem = path.file_stem().expect("a file name").to_string_lossy();
            let hook = stem
                .parse::<Hook>()
                .map_err(|e| format!("{}: {e} (name fixtures <hook>.json)", rel(&path)))?;
            Ok((hook, path))
        })
        .collect()
}

fn load(
    name: &str,
    source: &[u8],
    config: &PluginConfig,
) -> Result<Box<dyn pomona::policy::PolicyPlugin>, PluginError> {
    loader::load(name, source, config, Limits::default()).map(|(_, plugin)| plugin)
}

/// Where two snapshots differ, readably; `None` if they are equal.
fn diff(expected: &[String], actual: &[String]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let mut out = String::new();
    let mut differing = 0;
    for i in 0..expected.len().max(actual.len()) {
        let (e, a) = (expected.get(i), actual.get(i));
        if e == a {
            continue;
        }
        differing += 1;
        out.push_str(&format!("  line {} (record {i}):\n", i + 1));
        match e {
            Some(e) => out.push_str(&format!("    - expected {e}\n")),
            None => out.push_str("    - expected (no line)\n"),
        }
        match a {
            Some(a) => out.push_str(&format!("    + actual   {a}\n")),
            None => out.push_str("    + actual   (no line)\n"),
        }
    }
    Some(format!(
        "{differing} of {} lines differ:\n{out}",
        expected.len().max(actual.len())
    ))
}

/// Run one plugin over all its fixture sets; every problem found goes into `failures`.
/// Returns how many hook fixtures were checked.
fn check(plugin: &UnderTest, update: bool, failures: &mut Vec<String>) -> usize {
    let artifact = match &plugin.artifact {
        Ok(a) => a,
        Err(e) => {
            failures.push(e.clone());
            return 0;
        }
    };
    let source = std::fs::read(artifact).expect("reading the plugin");
    let strict_source = (loader::runtime_of(&source) == pomona::policy::chain::Runtime::Lua)
        .then(|| [STRICT_GLOBALS.as_bytes(), &source].concat());
    let fixtures = plugin.dir.join("fixtures");
    let mut checked = 0;
    for set in fixture_sets(&fixtures) {
        let config = match read_config(&set) {
            Ok(c) => c,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let loaded = match load(&plugin.name, &source, &config) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!(
                    "{} did not load with {}: {e}",
                    rel(artifact),
                    rel(&set)
                ));
                continue;
            }
        };
        let hooks = match hook_fixtures(&set) {
            Ok(h) => h,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if hooks.is_empty() {
            failures.push(format!("{} has no <hook>.json fixture", rel(&set)));
        }
        for (hook, path) in hooks {
            checked += 1;
            let what = format!("{} over {}", plugin.name, rel(&path));
            if !loaded.hooks().contains(&hook) {
                failures.push(format!("{what}: the plugin does not implement {hook}"));
                continue;
            }
            let records: Vec<Value> = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{what}: not a JSON array of records: {e}"));
                    continue;
                }
            };
            if records.is_empty() {
                failures.push(format!("{what}: no records"));
            }
            let actual = fixture::run(loaded.as_ref(), hook, records.clone());

            for line in &actual {
                let v: Value = serde_json::from_str(line).expect("fixture lines are JSON");
                if let Some(e) = v["error"].as_str()
                    && !e.starts_with("fixture record ")
                {
                    failures.push(format!("{what}: the plugin failed: {line}"));
                }
            }

            if let Some(strict) = &strict_source {
                match load(&plugin.name, strict, &config) {
                    Ok(p) => {
                        let strict_lines = fixture::run(p.as_ref(), hook, records);
                        if let Some(d) = diff(&actual, &strict_lines) {
                            failures.push(format!(
                                "{what}: in strict mode (undefined globals are errors) {d}"
                            ));
                        }
                    }
                    Err(e) => failures.push(format!(
                        "{what}: does not load in strict mode (undefined globals are errors): {e}"
                    )),
                }
            }

            let stem = path.file_stem().expect("a file name").to_string_lossy();
            let snapshot = set.join(format!("{stem}.expected.jsonl"));
            if update {
                let mut text = actual.join("\n");
                text.push('\n');
                std::fs::write(&snapshot, text).expect("writing the snapshot");
                continue;
            }
            let expected: Vec<String> = match std::fs::read_to_string(&snapshot) {
                Ok(t) => t.lines().map(str::to_owned).collect(),
                Err(e) => {
                    failures.push(format!(
                        "{what}: no snapshot {} ({e}); create it with POMONA_UPDATE_SNAPSHOTS=1",
                        rel(&snapshot)
                    ));
                    continue;
                }
            };
            if let Some(d) = diff(&expected, &actual) {
                failures.push(format!(
                    "{what} does not match {}: {d}  (if the change is meant, rerun with \
                     POMONA_UPDATE_SNAPSHOTS=1 and review the diff)",
                    rel(&snapshot)
                ));
            }
        }
    }
    checked
}

#[test]
fn first_party_plugins_and_the_template_match_their_snapshots() {
    let update = std::env::var("POMONA_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1");
    let plugins = first_party();
    let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    assert!(
        plugins.len() >= MIN_FIRST_PARTY,
        "found only {} first-party plugins with fixtures under plugins/ ({names:?}); \
         expected at least {MIN_FIRST_PARTY}",
        plugins.len()
    );
    let mut failures = Vec::new();
    for plugin in plugins.iter().chain([&template()]) {
        let checked = check(plugin, update, &mut failures);
        if checked == 0 && plugin.artifact.is_ok() {
            failures.push(format!("{} has no fixtures to check", rel(&plugin.dir)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_snapshot_diff_names_each_differing_line() {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(diff(&s(&["a", "b"]), &s(&["a", "b"])), None);
    let d = diff(&s(&["a", "b"]), &s(&["a", "c", "d"])).unwrap();
    assert!(d.starts_with("2 of 3 lines differ"), "{d}");
    assert!(
        d.contains("line 2 (record 1):\n    - expected b\n    + actual   c"),
        "{d}"
    );
    assert!(
        d.contains("line 3 (record 2):\n    - expected (no line)\n    + actual   d"),
        "{d}"
    );
}

#[test]
fn strict_mode_catches_stray_globals() {
    let cases = [
        (
            "return { place = function(d) team = 'x'; return { team = team } end }",
            "assignment to undefined global team",
        ),
        (
            "return { place = function(d) return { team = pomona.config.team or tean } end }",
            "read of undefined global tean",
        ),
    ];
    let record = vec![json!({"serial_number": "A", "stage": "synced"})];
    for (src, want) in cases {
        let plain = load("g", src.as_bytes(), &PluginConfig::new()).unwrap();
        let strict_src = [STRICT_GLOBALS.as_bytes(), src.as_bytes()].concat();
        let strict = load("g", &strict_src, &PluginConfig::new()).unwrap();
        let plain_lines = fixture::run(plain.as_ref(), Hook::Place, record.clone());
        let strict_lines = fixture::run(strict.as_ref(), Hook::Place, record.clone());
        assert!(!plain_lines[0].contains(want), "{}", plain_lines[0]);
        assert!(strict_lines[0].contains(want), "{}", strict_lines[0]);
    }
}

/// The `---@class` blocks of the editor stubs: class name -> its `---@field` names.
fn stub_classes(stubs: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut classes = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in stubs.lines() {
        if let Some(rest) = line.strip_prefix("---@class ") {
            let name = rest.split_whitespace().next().expect("a class name");
            classes.insert(name.to_owned(), BTreeSet::new());
            current = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("---@field ")
            && let Some(class) = &current
        {
            let field = rest.split_whitespace().next().expect("a field name");
            classes
                .get_mut(class)
                .expect("current class")
                .insert(field.trim_end_matches('?').to_owned());
        } else {
            current = None;
        }
    }
    classes
}

/// The keys of a record's JSON form (every field, `None` ones included as null).
fn keys(v: Value) -> BTreeSet<String> {
    v.as_object()
        .expect("a record is an object")
        .keys()
        .cloned()
        .collect()
}

fn stubs() -> String {
    std::fs::read_to_string(repo().join("sdk/lua/pomona.lua")).expect("reading the Lua stubs")
}

#[test]
fn lua_editor_stubs_are_valid_lua() {
    // The stubs define the `pomona` table and return nothing: the loader runs them in the
    // sandbox and only then refuses them for not returning a table of hooks.
    let err = load("pomona-stubs", stubs().as_bytes(), &PluginConfig::new())
        .err()
        .expect("the stubs are not a plugin");
    assert_eq!(
        err,
        PluginError::Load("a plugin must return a table of hook functions, not nil".into())
    );
}

#[test]
fn lua_editor_stubs_describe_every_field_the_engine_sends_and_accepts() {
    let classes = stub_classes(&stubs());
    let record = |class: &str| {
        classes
            .get(class)
            .unwrap_or_else(|| panic!("no ---@class {class} in sdk/lua/pomona.lua"))
            .clone()
    };
    fn parsed<T: serde::de::DeserializeOwned + serde::Serialize>(v: Value) -> Value {
        serde_json::to_value(serde_json::from_value::<T>(v).expect("a valid record")).unwrap()
    }
    let cases = [
        (
            "pomona.DepEvent",
            parsed::<DepEvent>(json!({"server": "s", "serial_number": "x", "op_type": "added"})),
        ),
        (
            "pomona.Device",
            parsed::<Device>(json!({"serial_number": "x", "stage": "synced"})),
        ),
        (
            "pomona.UserIdentity",
            parsed::<UserIdentity>(json!({"username": "u"})),
        ),
        ("pomona.Progress", parsed::<Progress>(json!({}))),
        (
            "pomona.StepProgress",
            parsed::<StepProgress>(json!({"id": "a", "status": "pending"})),
        ),
        (
            "pomona.AccountStep",
            parsed::<AccountStep>(json!({"username": "u"})),
        ),
        (
            "pomona.PackageStep",
            parsed::<PackageStep>(json!({"url": "https://x/a.pkg"})),
        ),
        (
            "pomona.CommandStep",
            parsed::<CommandStep>(json!({"request_type": "Settings"})),
        ),
    ];
    for (class, sample) in cases {
        assert_eq!(record(class), keys(sample), "fields of {class}");
    }

    let steps = steps_from_json(&json!([
        {"id": "p", "install_profile": "wifi"},
        {"id": "k", "install_package": {"url": "https://x/a.pkg"}},
        {"id": "a", "account": {"username": "u"}},
        {"id": "c", "command": {"request_type": "Settings"}},
    ]))
    .unwrap();
    let step_keys: BTreeSet<String> = Decision::Steps(steps)
        .to_json()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| keys(s.clone()))
        .collect();
    assert_eq!(record("pomona.Step"), step_keys, "fields of pomona.Step");

    let hooks: BTreeSet<String> = Hook::ALL.iter().map(|h| h.lua_name().to_owned()).collect();
    assert_eq!(record("pomona.Plugin"), hooks, "hooks of pomona.Plugin");
    assert_eq!(record("pomona.Host"), BTreeSet::from(["config".to_owned()]));
}

#[test]
fn lua_editor_stubs_name_every_decision_shape() {
    let stubs = stubs();
    let alias = |name: &str| -> String {
        let prefix = format!("---@alias {name} ");
        stubs
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no ---@alias {name}"))
            .to_owned()
    };
    let shapes = [
        (
            "pomona.AssignDecision",
            Hook::AutoAssign,
            vec![
                json!({"assign": "p"}),
                json!({"skip": true}),
                json!({"retry_after": 60}),
            ],
        ),
        (
            "pomona.PlaceDecision",
            Hook::Place,
            vec![json!({"team": "t"}), json!({"no_team": true})],
        ),
        (
            "pomona.ReleaseDecision",
            Hook::Release,
            vec![
                json!("release"),
                json!({"release": true}),
                json!({"wait": 60}),
                json!({"hold": "why"}),
            ],
        ),
    ];
    for (name, hook, shapes) in shapes {
        let text = alias(name);
        for shape in shapes {
            // Each shape the stubs name is one the engine accepts for the hook.
            assert!(
                Decision::from_json(hook, &shape).unwrap().is_some(),
                "{shape}"
            );
            let want = match &shape {
                Value::String(s) => format!("\"{s}\""),
                Value::Object(m) => {
                    let (k, _) = m.iter().next().unwrap();
                    format!("{{ {k}: ")
                }
                _ => unreachable!(),
            };
            assert!(text.contains(&want), "{name} lacks {want}: {text}");
        }
    }
}

/// A configuration a plugin must refuse: plugin, configuration, how the load error starts.
type Refusal = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn first_party_lua_plugins_refuse_configuration_they_cannot_read() {
    let cases: &[Refusal] = &[
        (
            "place-by-model",
            &[("famliy.Mac", "Macs")],
            r#"unknown config key "famliy.Mac": expected model.<prefix>, family.<family>, default or keep_current"#,
        ),
        (
            "place-by-model",
            &[("model.", "Macs")],
            r#"unknown config key "model.""#,
        ),
        (
            "place-by-model",
            &[("model.MacBook", " ")],
            "model.MacBook has an empty team name (use @none for no team)",
        ),
        (
            "place-by-model",
            &[("family.mac", "A"), ("family.Mac", "B")],
            "family.Mac and family.mac differ only in case",
        ),
        (
            "place-by-model",
            &[("keep_current", "yes")],
            r#"keep_current must be "true" or "false", not "yes""#,
        ),
        (
            "setup-basic",
            &[("profile", "wifi")],
            r#"unknown config key "profile": expected profiles, team.<team>.profiles, optional, account or account.*"#,
        ),
        (
            "setup-basic",
            &[("team.Retail.profile", "kiosk")],
            r#"unknown config key "team.Retail.profile""#,
        ),
        (
            "setup-basic",
            &[("account.admin", "1")],
            r#"account.admin must be "true" or "false", not "1""#,
        ),
        (
            "release-when-done",
            &[("timeout", "60")],
            r#"unknown config key "timeout": expected on_failure, timeout_secs or poll_secs"#,
        ),
        (
            "release-when-done",
            &[("on_failure", "sometimes")],
            r#"on_failure must be "hold" or "release", not "sometimes""#,
        ),
        (
            "release-when-done",
            &[("timeout_secs", "soon")],
            r#"timeout_secs must be a whole number of seconds, at least 0, not "soon""#,
        ),
        (
            "release-when-done",
            &[("timeout_secs", "-5")],
            r#"timeout_secs must be a whole number of seconds, at least 0, not "-5""#,
        ),
        (
            "release-when-done",
            &[("poll_secs", "1.5")],
            r#"poll_secs must be a whole number of seconds, at least 1, not "1.5""#,
        ),
        (
            "release-when-done",
            &[("poll_secs", "0")],
            r#"poll_secs must be a whole number of seconds, at least 1, not "0""#,
        ),
    ];
    let source = |name: &str| {
        let path = repo().join(format!("plugins/{name}/{name}.lua"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    for name in ["place-by-model", "setup-basic", "release-when-done"] {
        let loaded = load(name, &source(name), &PluginConfig::new());
        assert!(
            loaded.is_ok(),
            "{name} with no configuration: {:?}",
            loaded.err()
        );
    }
    for (name, config, want) in cases {
        let config: PluginConfig = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = load(name, &source(name), &config)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded with {config:?}"));
        let PluginError::Load(message) = &err else {
            panic!("{name} with {config:?}: {err:?}");
        };
        assert!(
            message.starts_with(want),
            "{name} with {config:?}: {message:?} does not start with {want:?}"
        );
    }
}
