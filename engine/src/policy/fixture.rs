//! Run a plugin offline over fixture records: what `pomona plugin test` prints, shared with the
//! snapshot tests of the first-party plugins.
//!
//! Each fixture record gives one output line, a JSON object
//! `{"index": i, "decision": <Lua-shape decision or null>, "error": <string or null>}`:
//!
//! - a definite decision: `decision` is its Lua shape ([`Decision::to_json`]), `error` is null;
//! - "no opinion": both are null;
//! - the plugin failed (error, limit, malformed answer): `error` is the [`PluginError`] text;
//! - the record is not an input for the hook: `error` is `fixture record i: not a … input: …`.
//!
//! A failing record never stops the run: every record gets its line.
//!
//! [`Decision::to_json`]: super::Decision::to_json
//! [`PluginError`]: super::PluginError

use serde_json::{Value, json};

use super::{Hook, HookInput, PolicyPlugin};

/// The output line for record number `index`, as compact JSON without a trailing newline.
pub fn line(plugin: &dyn PolicyPlugin, hook: Hook, index: usize, record: Value) -> String {
    let result = HookInput::from_fixture(hook, record)
        .map_err(|e| format!("fixture record {index}: {e}"))
        .and_then(|input| plugin.call(&input).map_err(|e| e.to_string()));
    let line = match result {
        Ok(d) => json!({"index": index, "decision": d.map(|d| d.to_json()), "error": null}),
        Err(e) => json!({"index": index, "decision": null, "error": e}),
    };
    line.to_string()
}

/// The output lines for `records`, one per record in order, computed as the iterator advances
/// (so a caller can print each line as soon as it is decided).
pub fn lines(
    plugin: &dyn PolicyPlugin,
    hook: Hook,
    records: Vec<Value>,
) -> impl Iterator<Item = String> + '_ {
    records
        .into_iter()
        .enumerate()
        .map(move |(index, record)| line(plugin, hook, index, record))
}

/// Every output line for `records`, exactly as `pomona plugin test` prints them (one string per
/// line, without the newline).
pub fn run(plugin: &dyn PolicyPlugin, hook: Hook, records: Vec<Value>) -> Vec<String> {
    lines(plugin, hook, records).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::lua::LuaPlugin;
    use crate::policy::{
        Decision, Limits, PlaceDecision, PluginConfig, PluginError, ReleaseDecision,
    };

    /// A plugin answering from a closure, to test the runner without any runtime.
    struct Answer(fn(&HookInput) -> Result<Option<Decision>, PluginError>);

    impl PolicyPlugin for Answer {
        fn hooks(&self) -> Vec<Hook> {
            vec![Hook::Place, Hook::Release]
        }

        fn call(&self, input: &HookInput) -> Result<Option<Decision>, PluginError> {
            (self.0)(input)
        }
    }

    fn by_serial(input: &HookInput) -> Result<Option<Decision>, PluginError> {
        let d = match input {
            HookInput::Place(d) | HookInput::Release(d, _) => d,
            _ => return Ok(None),
        };
        match d.serial_number.as_str() {
            "TEAM" => Ok(Some(Decision::Place(PlaceDecision::Team("Ops".into())))),
            "NONE" => Ok(Some(Decision::Place(PlaceDecision::NoTeam))),
            "WAIT" => Ok(Some(Decision::Release(ReleaseDecision::Wait(30)))),
            "FAIL" => Err(PluginError::Failed("boom".into())),
            "SLOW" => Err(PluginError::Limit(crate::policy::LimitKind::Timeout)),
            _ => Ok(None),
        }
    }

    fn device(serial: &str) -> Value {
        json!({"serial_number": serial, "stage": "enrolled"})
    }

    #[test]
    fn every_record_gets_its_line_in_order() {
        let records = vec![
            device("TEAM"),
            device("NONE"),
            device("OTHER"),
            device("FAIL"),
            device("SLOW"),
            json!({"serial_number": "no stage"}),
            json!("not even an object"),
        ];
        let out = run(&Answer(by_serial), Hook::Place, records);
        assert_eq!(
            out,
            [
                r#"{"decision":{"team":"Ops"},"error":null,"index":0}"#,
                r#"{"decision":{"no_team":true},"error":null,"index":1}"#,
                r#"{"decision":null,"error":null,"index":2}"#,
                r#"{"decision":null,"error":"plugin failed: boom","index":3}"#,
                r#"{"decision":null,"error":"plugin exceeded its time limit","index":4}"#,
                r#"{"decision":null,"error":"fixture record 5: not a place input: missing field `stage`","index":5}"#,
                r#"{"decision":null,"error":"fixture record 6: not a place input: invalid type: string \"not even an object\", expected struct Device","index":6}"#,
            ]
        );
    }

    #[test]
    fn release_records_carry_device_and_progress() {
        let records = vec![
            json!({"device": device("WAIT"), "progress": {"steps": [], "elapsed_secs": 5}}),
            json!({"device": device("WAIT")}),
            device("WAIT"),
        ];
        let out = run(&Answer(by_serial), Hook::Release, records);
        assert_eq!(out[0], r#"{"decision":{"wait":30},"error":null,"index":0}"#);
        assert_eq!(out[1], r#"{"decision":{"wait":30},"error":null,"index":1}"#);
        assert!(
            out[2].contains("fixture record 2: not a release input: missing field `device`"),
            "{}",
            out[2]
        );
    }

    #[test]
    fn lines_are_computed_lazily_and_match_run() {
        let records = vec![device("TEAM"), device("NONE")];
        let plugin = Answer(by_serial);
        let mut it = lines(&plugin, Hook::Place, records.clone());
        assert_eq!(
            it.next().as_deref(),
            Some(r#"{"decision":{"team":"Ops"},"error":null,"index":0}"#)
        );
        let rest: Vec<String> = it.collect();
        assert_eq!(rest, run(&plugin, Hook::Place, records)[1..]);
        assert!(run(&plugin, Hook::Place, Vec::new()).is_empty());
    }

    #[test]
    fn runs_a_lua_plugin_with_its_config_and_limits() {
        let src = r#"return {
            place = function(d)
              if d.serial_number == "LOOP" then while true do end end
              if d.device_family == "Mac" then return { team = pomona.config.team } end
              if d.device_family == "iPad" then return { colour = "blue" } end
            end }"#;
        let config = PluginConfig::from([("team".to_owned(), "Macs".to_owned())]);
        let limits = Limits {
            instructions: 100_000,
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let plugin = LuaPlugin::load("t", src, &config, limits).unwrap();
        let records = vec![
            json!({"serial_number": "A", "device_family": "Mac", "stage": "synced"}),
            json!({"serial_number": "B", "device_family": "iPad", "stage": "synced"}),
            json!({"serial_number": "LOOP", "stage": "synced"}),
            json!({"serial_number": "C", "stage": "synced"}),
        ];
        let out = run(&plugin, Hook::Place, records);
        assert_eq!(
            out[0],
            r#"{"decision":{"team":"Macs"},"error":null,"index":0}"#
        );
        assert!(
            out[1].contains(r#""error":"plugin returned a malformed decision: unknown place decision \"colour\""#),
            "{}",
            out[1]
        );
        assert_eq!(
            out[2],
            r#"{"decision":null,"error":"plugin exceeded its instruction limit","index":2}"#
        );
        assert_eq!(out[3], r#"{"decision":null,"error":null,"index":3}"#);
    }
}
