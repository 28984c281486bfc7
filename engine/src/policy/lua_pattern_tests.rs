//! Differential tests: the Rust matcher against Lua 5.4's own `string` functions (the vendored C
//! library, run in a plain Lua state as the oracle), on a table of cases and on random small
//! patterns; and the limits on pathological patterns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mlua::{Lua, Table};
use proptest::prelude::*;

use super::*;

struct Unlimited;

impl StepBudget for Unlimited {
    fn tick(&self) -> Result<(), LimitKind> {
        Ok(())
    }
    fn exceeded(&self, _: LimitKind) {}
}

/// A budget of `n` ticks, then the instruction limit.
struct Ticks(AtomicU64);

impl StepBudget for Ticks {
    fn tick(&self) -> Result<(), LimitKind> {
        match self.0.load(Ordering::Relaxed) {
            0 => Err(LimitKind::Instructions),
            n => {
                self.0.store(n - 1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
    fn exceeded(&self, _: LimitKind) {}
}

/// Lua code comparing `string.X` (Lua's C) with `mine.X` (this module) on the same arguments.
const COMPARE: &str = r#"
local function ser(...)
  local out = {}
  for i = 1, select('#', ...) do
    local v = select(i, ...)
    out[#out + 1] = type(v) .. ':' .. tostring(v)
  end
  return table.concat(out, ',')
end
local function run(f, ...)
  local r = table.pack(pcall(f, ...))
  if r[1] then return 'ok ' .. ser(table.unpack(r, 2, r.n)) end
  return 'error ' .. tostring(r[2])
end
local function iterate(g, ...)
  local out, n = {}, 0
  local ok, err = pcall(function(...)
    for a, b, c in g(...) do
      n = n + 1
      out[#out + 1] = ser(a, b, c)
      if n > 200 then break end
    end
  end, ...)
  if not ok then return 'error ' .. tostring(err) end
  return 'ok ' .. table.concat(out, ';')
end
function compare(name, ...)
  if name == 'gmatch' then
    return iterate(string.gmatch, ...), iterate(mine.gmatch, ...)
  end
  return run(string[name], ...), run(mine[name], ...)
end
"#;

/// Whether two outcomes agree. Error messages are compared without Lua's position prefix and
/// mlua's "runtime error:" wrapping and traceback.
fn same(expected: &str, got: &str) -> bool {
    match (expected.strip_prefix("error "), got.strip_prefix("error ")) {
        (Some(e), Some(g)) => {
            let g = g.lines().next().unwrap_or_default();
            let g = g.strip_prefix("runtime error: ").unwrap_or(g);
            !g.is_empty() && e.trim_end().ends_with(g)
        }
        (None, None) => expected == got,
        _ => false,
    }
}

fn oracle() -> Lua {
    let lua = Lua::new();
    let mine: Table = lua.create_table().unwrap();
    install(&lua, &mine, Arc::new(Unlimited), 1 << 24).unwrap();
    lua.globals().set("mine", mine).unwrap();
    lua.load(COMPARE).exec().unwrap();
    lua
}

/// Compare one call; errors must agree in kind and (for pattern errors) in message.
fn check(lua: &Lua, name: &str, args: mlua::MultiValue) -> Result<(), String> {
    let compare: mlua::Function = lua.globals().get("compare").unwrap();
    let mut all = mlua::MultiValue::new();
    all.push_back(mlua::Value::String(lua.create_string(name).unwrap()));
    all.extend(args.clone());
    let (expected, got): (String, String) = compare.call(all).unwrap();
    let same = same(&expected, &got);
    if same {
        Ok(())
    } else {
        Err(format!(
            "{name}{:?}: Lua says {expected:?}, the port says {got:?}",
            args.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>()
        ))
    }
}

fn check_lua(lua: &Lua, call: &str) {
    let (expected, got): (String, String) = lua
        .load(format!("return compare({call})"))
        .eval()
        .unwrap_or_else(|e| panic!("{call}: {e}"));
    let same = same(&expected, &got);
    assert!(same, "{call}: Lua says {expected:?}, the port says {got:?}");
}

#[test]
fn agrees_with_lua_on_a_table_of_cases() {
    let lua = oracle();
    let cases = [
        // find: plain, init, negative indices, anchors, captures.
        r#"'find', 'hello world', 'o w'"#,
        r#"'find', 'hello world', 'o', 6"#,
        r#"'find', 'hello world', 'o', -3"#,
        r#"'find', 'hello world', 'l', -100"#,
        r#"'find', 'hello world', 'l', 0"#,
        r#"'find', 'hello', '', 10"#,
        r#"'find', 'hello', '', 6"#,
        r#"'find', 'hello', '', 7"#,
        r#"'find', 'a.b', '.', 1, true"#,
        r#"'find', 'a+b', '+', 1, 1"#,
        r#"'find', 'a.b', '%.'"#,
        r#"'find', 'hello', '^h'"#,
        r#"'find', 'hello', '^e'"#,
        r#"'find', 'hello', 'o$'"#,
        r#"'find', 'hel$lo', 'l$l'"#,
        r#"'find', 'key = value', '(%w+)%s*=%s*(%w+)'"#,
        r#"'find', 'abc', '()b()'"#,
        r#"'find', 12345, 34"#,
        r#"'find', 'abc', 'b', '2'"#,
        r#"'find', 'abc', 'b', 2.0"#,
        r#"'find', 'abc', 'b', 2.5"#,
        r#"'find', nil, 'b'"#,
        r#"'find', 'abc'"#,
        r#"'find', 'abc', '(a'"#,
        r#"'find', 'abc', 'a)'"#,
        r#"'find', 'abc', '%'"#,
        r#"'find', 'abc', '[a'"#,
        r#"'find', 'abc', '[]'"#,
        r#"'find', 'a]c', '[]]'"#,
        r#"'find', 'a]c', '[^]]+'"#,
        r#"'find', 'abc', '%1'"#,
        r#"'find', 'abc', '(a)%2'"#,
        r#"'find', 'abc', '(a%1)'"#,
        r#"'find', 'abc', '%f'"#,
        r#"'find', 'abc', '%b'"#,
        r#"'find', 'abc', '%ba'"#,
        r#"'find', 'a\0b', '%z'"#,
        r#"'find', 'a\0b', '\0'"#,
        r#"'find', 'a\0b', '[\0]'"#,
        r#"'find', string.rep('a', 40), string.rep('(a)', 33)"#,
        r#"'find', string.rep('a', 300), string.rep('a?', 300) .. string.rep('a', 300)"#,
        // match: classes and their complements, sets, ranges.
        r#"'match', 'Hello World 42!', '%a+'"#,
        r#"'match', 'Hello World 42!', '%d+'"#,
        r#"'match', 'Hello World 42!', '%l+'"#,
        r#"'match', 'Hello World 42!', '%u%l*'"#,
        r#"'match', 'Hello World 42!', '%s+()'"#,
        r#"'match', 'Hello World 42!', '%p'"#,
        r#"'match', 'Hello World 42!', '%w+$'"#,
        r#"'match', 'Hello World 42!', '%W+'"#,
        r#"'match', 'Hello World 42!', '%S+'"#,
        r#"'match', 'Hello World 42!', '%D+'"#,
        r#"'match', 'Hello World 42!', '%A+'"#,
        r#"'match', 'Hello World 42!', '%L+'"#,
        r#"'match', 'Hello World 42!', '%U+'"#,
        r#"'match', 'Hello World 42!', '%P+'"#,
        r#"'match', 'beef 0x1F', '%x+'"#,
        r#"'match', 'beef 0x1F', '%X+'"#,
        r#"'match', 'a\tb\vc\fd', '%s'"#,
        r#"'match', 'a\1b\127c', '%c'"#,
        r#"'match', 'a\1b\127c', '%C+'"#,
        r#"'match', ' ~x', '%g+'"#,
        r#"'match', ' ~x', '%G'"#,
        r#"'match', 'caf\195\169', '[\128-\255]+'"#,
        r#"'match', 'x-y', '[a-]+'"#,
        r#"'match', 'x-y', '[%a-]+'"#,
        r#"'match', 'abc123', '[^%d]+'"#,
        r#"'match', 'abc123', '[b-c1-2]+'"#,
        r#"'match', 'abc', '[%]'"#,
        r#"'match', 'a%c', '[%%]'"#,
        r#"'match', 'aaab', 'a-b'"#,
        r#"'match', 'aaab', 'a-'"#,
        r#"'match', 'aaab', '(a*)(.*)'"#,
        r#"'match', 'aaab', '(a+)(b?)(c?)'"#,
        r#"'match', 'THE (quick) fox', '%((%a+)%)'"#,
        r#"'match', 'f(a(b)c) d', '%b()'"#,
        r#"'match', 'f(a(b)c d', '%b()'"#,
        r#"'match', 'THE (quick) fox', '%f[%a]%a+'"#,
        r#"'match', 'THE (quick) fox', '%f[%l]%a+'"#,
        r#"'match', 'hello', '%f[%z]'"#,
        r#"'match', 'hello', '()ll()'"#,
        r#"'match', 'say "hi" ok', '(["\'])(.-)%1'"#,
        r#"'match', 'abab', '(ab)%1$'"#,
        r#"'match', 'abc', '((a)(b))c'"#,
        r#"'match', 'abc', '()'"#,
        r#"'match', 'abc', '(()a)'"#,
        r#"'match', 'abc', '^(a)'"#,
        r#"'match', 'abc', 'c', -1"#,
        r#"'match', '', '^$'"#,
        r#"'match', 'x', '.-$'"#,
        r#"'match', '2024-01-31', '^(%d%d%d%d)-(%d%d)-(%d%d)$'"#,
        r#"'match', 'MacBook Pro 14"', '^MacBook'"#,
        // gmatch
        r#"'gmatch', 'one two  three', '%a+'"#,
        r#"'gmatch', 'k1=v1, k2=v2', '(%w+)=(%w+)'"#,
        r#"'gmatch', 'abc', ''"#,
        r#"'gmatch', 'abc', '.-'"#,
        r#"'gmatch', 'abc', 'x*'"#,
        r#"'gmatch', '^a^a', '^a'"#,
        r#"'gmatch', 'abcabc', 'b', 3"#,
        r#"'gmatch', 'abcabc', 'b', -2"#,
        r#"'gmatch', 'abc', '()'"#,
        r#"'gmatch', 'abc', '(a'"#,
        // gsub: strings with %0-%9 and %%, tables, functions, max n, anchors.
        r#"'gsub', 'hello world', 'o', '0'"#,
        r#"'gsub', 'hello world', '(o)', '[%1%1]'"#,
        r#"'gsub', 'hello world', 'o', '%0%0'"#,
        r#"'gsub', 'hello world', 'o', '%%'"#,
        r#"'gsub', 'hello world', 'o', '%1'"#,
        r#"'gsub', 'hello world', 'o', '%2'"#,
        r#"'gsub', 'hello world', 'o', '%x'"#,
        r#"'gsub', 'hello world', 'o', '50%'"#,
        r#"'gsub', 'hello world', '()o', '%1'"#,
        r#"'gsub', 'hello world', 'o', 7"#,
        r#"'gsub', 'hello world', 'o', 7.5"#,
        r#"'gsub', 'hello world', 'o', 'O', 1"#,
        r#"'gsub', 'hello world', 'o', 'O', 0"#,
        r#"'gsub', 'hello world', 'o', 'O', -1"#,
        r#"'gsub', 'hello world', '', '-'"#,
        r#"'gsub', 'hello world', 'x*', '-'"#,
        r#"'gsub', 'hello world', '^h', 'H'"#,
        r#"'gsub', 'hello world', '^', '>'"#,
        r#"'gsub', 'hello world', '$', '<'"#,
        r#"'gsub', 'hello world', '%w+', {hello = 'HI', world = false}"#,
        r#"'gsub', 'hello world', '(%w+)', {hello = 1.5}"#,
        r#"'gsub', 'hello world', '%w+', {hello = {}}"#,
        r#"'gsub', 'hello world', '%w+', setmetatable({}, {__index = function(_, k) return k:upper() end})"#,
        r#"'gsub', 'hello world', '(%w+) (%w+)', function(a, b) return b .. ' ' .. a end"#,
        r#"'gsub', 'hello world', '%w+', function(w) if w == 'world' then return nil end return #w end"#,
        r#"'gsub', 'hello world', '%w+', function() return true end"#,
        r#"'gsub', 'hello world', '%w+', function() error('boom') end"#,
        r#"'gsub', 'hello world', '()', function(p) return p end"#,
        r#"'gsub', 'hello world', 'o'"#,
        r#"'gsub', 'hello world', 'o', true"#,
        r#"'gsub', 'abc', '(a)(b)(c)', '%3%2%1%0'"#,
        r#"'gsub', 'abc', '(', 'x'"#,
        r#"'gsub', '', '', 'x'"#,
        r#"'gsub', 'a.b.c', '%.', '%%'"#,
    ];
    let mut failures = Vec::new();
    for case in cases {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_lua(&lua, case)));
        if let Err(e) = r {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| case.to_owned()),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Pattern pieces random patterns are made of (some malformed on purpose).
const PIECES: &[&str] = &[
    "a", "b", "1", " ", ".", "%a", "%d", "%s", "%W", "[ab]", "[^a]", "[a-c]", "*", "+", "-", "?",
    "(", ")", "()", "%1", "%2", "^", "$", "%b()", "%f[%w]", "%", "[", "]", "%%",
];

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..7).prop_map(|p| p.concat())
}

fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(&["a", "b", "1", " ", "(", ")", "%"][..]),
        0..12,
    )
    .prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn agrees_with_lua_on_random_patterns(
        s in subject(),
        p in pattern(),
        init in -14i64..14,
        repl in prop::sample::select(&["x", "%0", "<%1>", "%%", "%2"][..]),
        max_n in prop::option::of(-1i64..4),
    ) {
        thread_local!(static LUA: Lua = oracle());
        LUA.with(|lua| -> Result<(), TestCaseError> {
            let v = |x: &str| mlua::Value::String(lua.create_string(x).unwrap());
            let i = mlua::Value::Integer(init);
            let n = max_n.map_or(mlua::Value::Nil, mlua::Value::Integer);
            for (name, args) in [
                ("find", vec![v(&s), v(&p), i.clone()]),
                ("find", vec![v(&s), v(&p), i.clone(), mlua::Value::Boolean(true)]),
                ("match", vec![v(&s), v(&p), i.clone()]),
                ("gmatch", vec![v(&s), v(&p), i.clone()]),
                ("gsub", vec![v(&s), v(&p), v(repl), n]),
            ] {
                check(lua, name, args.into_iter().collect()).map_err(TestCaseError::fail)?;
            }
            Ok(())
        })?;
    }
}

#[test]
fn backtracking_stops_at_the_budget() {
    let src = "a".repeat(5000);
    let pat = format!("{}b", "a*".repeat(30));
    let budget = Ticks(AtomicU64::new(10_000));
    let mut meter = Meter::new(&budget);
    let started = std::time::Instant::now();
    let r = find(src.as_bytes(), pat.as_bytes(), 1, false, true, &mut meter);
    assert_eq!(r, Err(PatternError::Limit(LimitKind::Instructions)));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn gsub_output_is_bounded() {
    let src = "a".repeat(1000);
    let mut meter = Meter::new(&Unlimited);
    let r = gsub(
        src.as_bytes(),
        b"a",
        None,
        64 * 1024,
        &mut meter,
        &mut |_, out| {
            out.extend_from_slice(&[b'x'; 1000]);
            Ok(true)
        },
    );
    assert_eq!(r, Err(PatternError::Limit(LimitKind::Memory)));
}
