//! Lua runtime tests: decisions, sandbox, and hostile plugins contained by their limits.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::policy::{AssignDecision, PlaceDecision, ReleaseDecision};

fn limits() -> Limits {
    Limits {
        instructions: 2_000_000,
        memory_bytes: 4 << 20,
        timeout: Duration::from_millis(500),
    }
}

fn load(src: &str) -> LuaPlugin {
    LuaPlugin::load("test", src, &PluginConfig::new(), limits()).unwrap()
}

fn event() -> HookInput {
    HookInput::from_fixture(
        Hook::AutoAssign,
        json!({"server": "hq", "serial_number": "C02ABC", "model": "MacBook Air", "device_family": "Mac", "op_type": "added"}),
    )
    .unwrap()
}

fn device() -> HookInput {
    HookInput::from_fixture(
        Hook::Place,
        json!({"serial_number": "C02ABC", "device_family": "Mac", "stage": "synced"}),
    )
    .unwrap()
}

fn assign_with(body: &str) -> Result<Option<Decision>, PluginError> {
    load(&format!(
        "return {{ auto_assign = function(e) {body} end }}"
    ))
    .call(&event())
}

#[test]
fn a_plugin_sees_the_fields_and_decides() {
    let p = load(
        r#"
        local M = {}
        function M.auto_assign(e)
          if e.device_family == "Mac" and e.serial_number:sub(1, 3) == "C02" and e.profile_uuid == nil then
            return { assign = "mac-" .. e.server }
          end
        end
        function M.place(d) return { team = pomona.config.team } end
        function M.release(d, p)
          if p.elapsed_secs > 60 then return "release" end
          return { wait = 30 }
        end
        return M
        "#,
    );
    assert_eq!(p.hooks(), [Hook::AutoAssign, Hook::Place, Hook::Release]);
    assert_eq!(
        p.call(&event()).unwrap(),
        Some(Decision::Assign(AssignDecision::Assign("mac-hq".into())))
    );
    let release = HookInput::from_fixture(
        Hook::Release,
        json!({"device": {"serial_number": "C02ABC", "stage": "enrolled"}, "progress": {"steps": [], "elapsed_secs": 90}}),
    )
    .unwrap();
    assert_eq!(
        p.call(&release).unwrap(),
        Some(Decision::Release(ReleaseDecision::Release))
    );
    assert_eq!(
        p.call(&HookInput::SetupSteps(match device() {
            HookInput::Place(d) => d,
            _ => unreachable!(),
        }))
        .unwrap(),
        None
    );
}

#[test]
fn configuration_reaches_the_plugin() {
    let mut config = PluginConfig::new();
    config.insert("team".into(), "Mac fleet".into());
    let p = LuaPlugin::load(
        "cfg",
        "return { place = function(d) return { team = pomona.config.team } end }",
        &config,
        limits(),
    )
    .unwrap();
    assert_eq!(
        p.call(&device()).unwrap(),
        Some(Decision::Place(PlaceDecision::Team("Mac fleet".into())))
    );
}

#[test]
fn nil_is_no_opinion_and_bad_shapes_are_malformed() {
    assert_eq!(assign_with("return nil").unwrap(), None);
    assert_eq!(assign_with("").unwrap(), None);
    for (body, want) in [
        ("return 'standard'", "expected"),
        ("return { assign = 42 }", "non-empty string"),
        ("return { assign = 'a', skip = true }", "expected"),
        ("return { retry_after = -5 }", "whole number"),
        ("return { assign = function() end }", ""),
        ("local t = {} t.self = t return t", ""),
    ] {
        match assign_with(body) {
            Err(PluginError::Malformed(m)) => assert!(m.contains(want), "{body}: {m}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn load_errors_are_precise() {
    let cases = [
        ("return {", "test:1"),
        ("return 42", "must return a table"),
        ("return {}", "none of auto_assign"),
        ("error('boom at load')", "boom at load"),
        (
            "return { auto_asign = function() end }",
            "none of auto_assign",
        ),
    ];
    for (src, want) in cases {
        match LuaPlugin::load("test", src, &PluginConfig::new(), limits()) {
            Err(PluginError::Load(m)) => assert!(m.contains(want), "{src}: {m}"),
            other => panic!("{src}: {other:?}"),
        }
    }
}

#[test]
fn errors_are_failures_and_the_plugin_keeps_answering() {
    let p = load(
        r#"return { auto_assign = function(e)
             if e.serial_number == "C02ABC" then error("no rule for " .. e.serial_number) end
             return { skip = true }
           end }"#,
    );
    match p.call(&event()) {
        Err(PluginError::Failed(m)) => assert!(m.contains("no rule for C02ABC"), "{m}"),
        other => panic!("{other:?}"),
    }
    let other = HookInput::from_fixture(
        Hook::AutoAssign,
        json!({"server": "hq", "serial_number": "X", "op_type": "added"}),
    )
    .unwrap();
    assert_eq!(
        p.call(&other).unwrap(),
        Some(Decision::Assign(AssignDecision::Skip))
    );
}

#[test]
fn an_infinite_loop_hits_the_instruction_limit() {
    let started = Instant::now();
    assert_eq!(
        assign_with("while true do end"),
        Err(PluginError::Limit(LimitKind::Instructions))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn pcall_cannot_swallow_a_limit() {
    assert_eq!(
        assign_with("while true do pcall(function() while true do end end) end"),
        Err(PluginError::Limit(LimitKind::Instructions))
    );
    assert_eq!(
        assign_with(
            "while true do xpcall(function() while true do end end, function(m) return m end) end"
        ),
        Err(PluginError::Limit(LimitKind::Instructions))
    );
    // Ordinary errors are still catchable.
    assert_eq!(
        assign_with("local ok, err = pcall(error, 'x') if not ok then return { skip = true } end"),
        Ok(Some(Decision::Assign(AssignDecision::Skip)))
    );
}

#[test]
fn a_slow_plugin_hits_the_time_limit() {
    let tight = Limits {
        instructions: u64::MAX / 2,
        timeout: Duration::from_millis(50),
        ..limits()
    };
    let p = LuaPlugin::load(
        "slow",
        "return { auto_assign = function() while true do end end }",
        &PluginConfig::new(),
        tight,
    )
    .unwrap();
    assert_eq!(
        p.call(&event()),
        Err(PluginError::Limit(LimitKind::Timeout))
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    for body in [
        "local t = {} local i = 0 while true do i = i + 1 t[i] = string.rep('x', 1024) .. i end",
        "local s = 'x' while true do s = s .. s end",
        "local ok = pcall(function() local t = {} for i = 1, 1e9 do t[i] = i end end) local t = {} for i = 1, 1e9 do t[i] = i end",
    ] {
        assert_eq!(
            assign_with(body),
            Err(PluginError::Limit(LimitKind::Memory)),
            "{body}"
        );
    }
}

/// Lua's own `string.find` backtracks in C, where the instruction hook never runs: this call
/// took hours before the pattern functions were metered.
#[test]
fn a_backtracking_pattern_hits_a_limit() {
    let tight = Limits {
        timeout: Duration::from_millis(100),
        ..Limits::default()
    };
    let p = LuaPlugin::load(
        "test",
        r#"return { auto_assign = function(e)
            return { assign = tostring(string.find(string.rep("a", 5000), string.rep("a*", 30) .. "b")) }
        end }"#,
        &PluginConfig::new(),
        tight,
    )
    .unwrap();
    for body in [
        "string.find(s, pat)",
        "s:match(pat)",
        "for x in s:gmatch(pat) do end",
        "s:gsub(pat, 'x')",
        // `pcall` cannot swallow it.
        "while true do pcall(string.find, s, pat) end",
    ] {
        let p2 = LuaPlugin::load(
            "test",
            &format!(
                r#"local s, pat = string.rep("a", 5000), string.rep("a*", 30) .. "b"
                return {{ auto_assign = function(e) {body} end }}"#
            ),
            &PluginConfig::new(),
            tight,
        )
        .unwrap();
        let started = Instant::now();
        let r = p2.call(&event());
        assert!(
            matches!(
                r,
                Err(PluginError::Limit(
                    LimitKind::Instructions | LimitKind::Timeout
                ))
            ),
            "{body}: {r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{body}");
    }
    let started = Instant::now();
    let r = p.call(&event());
    assert!(
        matches!(
            r,
            Err(PluginError::Limit(
                LimitKind::Instructions | LimitKind::Timeout
            ))
        ),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn patterns_still_work_in_plugins() {
    let p = load(
        r#"return { auto_assign = function(e)
            local prefix = e.serial_number:match("^(%u%d%d)")
            local model = e.model:gsub("%s+", "-"):lower()
            local words = {}
            for w in ("a, b,c"):gmatch("[^,%s]+") do words[#words + 1] = w end
            local i, j = e.model:find("Air", 1, true)
            return { assign = prefix .. ":" .. model .. ":" .. table.concat(words) .. ":" .. i .. "-" .. j }
        end }"#,
    );
    assert_eq!(
        p.call(&event()).unwrap(),
        Some(Decision::Assign(AssignDecision::Assign(
            "C02:macbook-air:abc:9-11".into()
        )))
    );
}

/// Other C functions that could run long are bounded by memory or by the instruction budget.
#[test]
fn other_c_functions_are_bounded() {
    for (body, limits) in [
        ("string.rep('x', 1 << 30)", [LimitKind::Memory].as_slice()),
        (
            "string.rep('xy', 1 << 10, string.rep('z', 1 << 12))",
            &[LimitKind::Memory],
        ),
        (
            "('x'):rep(1 << 20):gsub('x', string.rep('y', 4096))",
            &[LimitKind::Memory, LimitKind::Instructions],
        ),
        ("table.move({}, 1, 1 << 50, 2)", &[LimitKind::Instructions]),
        (
            "table.move({}, math.mininteger + 1, 0, 1)",
            &[LimitKind::Instructions],
        ),
        (
            "local t = {} for i = 1, 1e5 do t[i] = 'xxxxxxxxxx' end return table.concat(t, string.rep(',', 4096))",
            &[LimitKind::Memory],
        ),
        (
            "local t = {} for i = 1, 2e4 do t[i] = -i end table.sort(t, function(a, b) local x = 0 for k = 1, 100 do x = x + k end return a < b end)",
            &[LimitKind::Instructions, LimitKind::Timeout],
        ),
    ] {
        let started = Instant::now();
        let r = assign_with(body);
        assert!(
            matches!(&r, Err(PluginError::Limit(k)) if limits.contains(k)),
            "{body}: {r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{body}");
    }
    // Absurd widths and slices are refused by Lua itself.
    for body in [
        "return string.format('%99999d', 1)",
        "return string.rep('x', 1e6):byte(1, -1)",
        "return table.unpack({}, 1, 1e8)",
    ] {
        let r = assign_with(body);
        assert!(
            matches!(r, Err(PluginError::Failed(_) | PluginError::Limit(_))),
            "{body}: {r:?}"
        );
    }
    // A small table.move still works.
    assert_eq!(
        assign_with(
            "local t = table.move({'a', 'b'}, 1, 2, 2) return { assign = t[1] .. t[2] .. t[3] }"
        )
        .unwrap(),
        Some(Decision::Assign(AssignDecision::Assign("aab".into())))
    );
}

#[test]
fn deep_recursion_is_contained() {
    let src = "return { auto_assign = function() local function f(n) return 1 + f(n + 1) end return f(1) end }";
    // With a small heap the frames exhaust memory first; with room, Lua's stack limit stops it.
    let small = LuaPlugin::load("r", src, &PluginConfig::new(), limits()).unwrap();
    assert_eq!(
        small.call(&event()),
        Err(PluginError::Limit(LimitKind::Memory))
    );
    let roomy = Limits {
        memory_bytes: 256 << 20,
        instructions: 100_000_000,
        timeout: Duration::from_secs(10),
    };
    let big = LuaPlugin::load("r", src, &PluginConfig::new(), roomy).unwrap();
    assert_eq!(
        big.call(&event()),
        Err(PluginError::Limit(LimitKind::Stack))
    );
}

#[test]
fn the_sandbox_has_no_way_out() {
    for probe in [
        "io.open('/etc/passwd')",
        "os.execute('true')",
        "os.exit(1)",
        "os.remove('/tmp/x')",
        "os.getenv('HOME')",
        "require('socket')",
        "dofile('/etc/passwd')",
        "loadfile('/etc/passwd')",
        "load('return 1')",
        "debug.getinfo(1)",
        "package.loadlib('libc.so.6', 'system')",
        "string.dump(function() end)",
        "collectgarbage('count')",
        "coroutine.create(function() end)",
    ] {
        match assign_with(&format!("{probe} return {{ skip = true }}")) {
            Err(PluginError::Failed(m)) => assert!(m.contains("nil"), "{probe}: {m}"),
            other => panic!("{probe} escaped the sandbox: {other:?}"),
        }
    }
    // What stays is harmless and useful.
    assert_eq!(
        assign_with(
            "local t = os.time() + pomona.now() local s = string.format('%d', math.floor(t)) print(s) return { skip = true }"
        ),
        Ok(Some(Decision::Assign(AssignDecision::Skip)))
    );
}

#[test]
fn a_plugin_cannot_change_the_environment_of_later_calls_into_a_limit() {
    // A plugin that hit a limit is not reused: the next call starts clean.
    let p = load(
        r#"return { auto_assign = function(e)
             if e.serial_number == "C02ABC" then while true do end end
             return { skip = true }
           end }"#,
    );
    assert_eq!(
        p.call(&event()),
        Err(PluginError::Limit(LimitKind::Instructions))
    );
    let other = HookInput::from_fixture(
        Hook::AutoAssign,
        json!({"server": "hq", "serial_number": "X", "op_type": "added"}),
    )
    .unwrap();
    assert_eq!(
        p.call(&other).unwrap(),
        Some(Decision::Assign(AssignDecision::Skip))
    );
}

#[test]
fn plugins_can_be_called_from_many_threads() {
    let p = std::sync::Arc::new(load(
        "return { auto_assign = function(e) return { assign = e.server } end }",
    ));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(
                        p.call(&event()).unwrap(),
                        Some(Decision::Assign(AssignDecision::Assign("hq".into())))
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
