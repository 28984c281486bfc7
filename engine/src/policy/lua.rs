//! The Lua runtime: Lua 5.4 (vendored), sandboxed, with instruction, memory and time limits.
//!
//! A plugin is a Lua chunk that returns a table with any of the functions `auto_assign(event)`,
//! `place(device)`, `setup_steps(device)` and `release(device, progress)`. Inputs are plain tables
//! with the snake_case fields of [`crate::policy::types`]; answers use the Lua shape validated by
//! [`Decision::from_json`]. The environment has `string`, `table`, `math`, `utf8`, the safe base
//! functions, `os.time`/`os.clock`/`os.date`, and a `pomona` table: `pomona.log(...)`,
//! `pomona.now()` (unix seconds) and `pomona.config` (this plugin's configuration, strings).
//! There is no `io`, `os.execute`, `require`, `load`/`loadfile`/`dofile`, `debug` or `coroutine`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mlua::chunk::ChunkMode;
use mlua::serde::{DeserializeOptions, SerializeOptions};
use mlua::{
    Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Table, Value, VmState,
};

use super::lua_pattern::{self, StepBudget};
use super::plugin_log::{LogBudget, LogLevel};
use super::{
    Decision, Hook, HookInput, LimitKind, Limits, PluginConfig, PluginError, PolicyPlugin,
};

/// Instructions between two limit checks.
const CHECK_EVERY: u32 = 1_000;

/// Most idle interpreters kept per plugin.
const POOL_MAX: usize = 8;

/// A loaded Lua plugin: its source, limits and a pool of ready interpreters.
pub struct LuaPlugin {
    name: String,
    source: Arc<str>,
    config: PluginConfig,
    limits: Limits,
    hooks: Vec<Hook>,
    pool: Mutex<Vec<Interpreter>>,
}

impl std::fmt::Debug for LuaPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaPlugin")
            .field("name", &self.name)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// The limit state one interpreter's hook checks.
#[derive(Default)]
struct Budget {
    /// Instructions left in this call, in units of [`CHECK_EVERY`]; 0 = exhausted.
    ticks_left: AtomicU64,
    /// Deadline of this call, as nanoseconds after `epoch`.
    deadline_ns: AtomicU64,
    /// The limit this call hit, if any (`LimitKind as u64 + 1`).
    hit: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    /// Log lines left in this call.
    log: LogBudget,
}

impl Budget {
    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    fn arm(&self, limits: &Limits) {
        let ticks = limits.instructions.div_ceil(u64::from(CHECK_EVERY)).max(1);
        self.ticks_left.store(ticks, Ordering::Relaxed);
        let deadline = self.epoch().elapsed() + limits.timeout;
        self.deadline_ns
            .store(deadline.as_nanos() as u64, Ordering::Relaxed);
        self.hit.store(0, Ordering::Relaxed);
        self.log.reset();
    }

    fn set_hit(&self, kind: LimitKind) {
        let _ = self
            .hit
            .compare_exchange(0, kind as u64 + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn hit(&self) -> Option<LimitKind> {
        match self.hit.load(Ordering::Relaxed) {
            0 => None,
            n => Some(
                [
                    LimitKind::Instructions,
                    LimitKind::Memory,
                    LimitKind::Timeout,
                    LimitKind::Stack,
                ][(n - 1) as usize],
            ),
        }
    }

    /// Called by the VM every [`CHECK_EVERY`] instructions.
    fn tick(&self) -> Result<(), LimitKind> {
        if self.hit().is_some() {
            // Once a limit is hit, every later check fails too, so `pcall` cannot swallow it.
            return Err(self.hit().expect("hit"));
        }
        let left = self.ticks_left.load(Ordering::Relaxed);
        if left <= 1 {
            self.set_hit(LimitKind::Instructions);
            return Err(LimitKind::Instructions);
        }
        self.ticks_left.store(left - 1, Ordering::Relaxed);
        self.check_deadline()
    }

    /// Charge `steps` instructions at once, for C functions that loop without the hook.
    fn charge(&self, steps: u64) -> Result<(), LimitKind> {
        if let Some(kind) = self.hit() {
            return Err(kind);
        }
        let ticks = steps.div_ceil(u64::from(CHECK_EVERY));
        let left = self.ticks_left.load(Ordering::Relaxed);
        if ticks >= left {
            self.set_hit(LimitKind::Instructions);
            return Err(LimitKind::Instructions);
        }
        self.ticks_left.store(left - ticks, Ordering::Relaxed);
        self.check_deadline()
    }

    /// Fail with the time limit once this call's deadline has passed.
    fn check_deadline(&self) -> Result<(), LimitKind> {
        if self.epoch().elapsed().as_nanos() as u64 > self.deadline_ns.load(Ordering::Relaxed) {
            self.set_hit(LimitKind::Timeout);
            return Err(LimitKind::Timeout);
        }
        Ok(())
    }
}

/// The pattern functions (`string.find`, ...) charge their matching steps here, so the
/// instruction and time limits hold inside them too.
impl StepBudget for Budget {
    fn tick(&self) -> Result<(), LimitKind> {
        Budget::tick(self)
    }

    fn exceeded(&self, kind: LimitKind) {
        self.set_hit(kind);
    }
}

/// One sandboxed Lua state with the plugin loaded.
struct Interpreter {
    lua: Lua,
    table: Table,
    budget: Arc<Budget>,
}

impl LuaPlugin {
    /// Load `source`: compile it in a fresh sandbox, run it, and check that it returns a table of
    /// hook functions. Errors name the line for syntax errors.
    pub fn load(
        name: &str,
        source: &str,
        config: &PluginConfig,
        limits: Limits,
    ) -> Result<LuaPlugin, PluginError> {
        let source: Arc<str> = Arc::from(source);
        let first = Interpreter::new(name, &source, config, &limits)?;
        let hooks: Vec<Hook> = Hook::ALL
            .into_iter()
            .filter(|h| {
                matches!(
                    first.table.raw_get::<Value>(h.lua_name()),
                    Ok(Value::Function(_))
                )
            })
            .collect();
        if hooks.is_empty() {
            return Err(PluginError::Load(
                "the returned table has none of auto_assign, place, setup_steps, release".into(),
            ));
        }
        Ok(LuaPlugin {
            name: name.to_owned(),
            source,
            config: config.clone(),
            limits,
            hooks,
            pool: Mutex::new(vec![first]),
        })
    }

    fn checkout(&self) -> Result<Interpreter, PluginError> {
        if let Some(i) = self.pool.lock().expect("pool lock").pop() {
            return Ok(i);
        }
        Interpreter::new(&self.name, &self.source, &self.config, &self.limits)
    }

    fn checkin(&self, i: Interpreter) {
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.len() < POOL_MAX {
            pool.push(i);
        }
    }
}

impl PolicyPlugin for LuaPlugin {
    fn hooks(&self) -> Vec<Hook> {
        self.hooks.clone()
    }

    fn call(&self, input: &HookInput) -> Result<Option<Decision>, PluginError> {
        let hook = input.hook();
        if !self.hooks.contains(&hook) {
            return Ok(None);
        }
        let interp = self.checkout()?;
        let result = interp.call(hook, input, &self.limits);
        interp.budget.log.finish(&self.name);
        // An interpreter that hit a limit may be mid-way through anything: never reuse it.
        if !matches!(result, Err(PluginError::Limit(_))) {
            self.checkin(interp);
        }
        result
    }
}

impl Interpreter {
    fn new(
        name: &str,
        source: &str,
        config: &PluginConfig,
        limits: &Limits,
    ) -> Result<Interpreter, PluginError> {
        let load_err = |e: mlua::Error| PluginError::Load(describe(&e));
        let lua = Lua::new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::OS,
            LuaOptions::default(),
        )
        .map_err(load_err)?;
        let budget = Arc::new(Budget::default());
        sandbox(&lua, name, config, &budget, limits).map_err(load_err)?;
        lua.set_memory_limit(limits.memory_bytes)
            .map_err(load_err)?;
        let b = budget.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(CHECK_EVERY),
            move |_, _| match b.tick() {
                Ok(()) => Ok(VmState::Continue),
                Err(kind) => Err(mlua::Error::runtime(format!(
                    "plugin exceeded its {kind} limit"
                ))),
            },
        )
        .map_err(load_err)?;
        let interp = Interpreter {
            table: lua.create_table().map_err(load_err)?,
            lua,
            budget,
        };
        interp.budget.arm(limits);
        let chunk = interp
            .lua
            .load(source)
            .set_name(format!("={name}"))
            .set_mode(ChunkMode::Text);
        let returned = chunk.eval::<Value>();
        interp.budget.log.finish(name);
        let returned = returned.map_err(|e| interp.classify(&e).unwrap_or_else(|| load_err(e)))?;
        let Value::Table(table) = returned else {
            return Err(PluginError::Load(format!(
                "a plugin must return a table of hook functions, not {}",
                returned.type_name()
            )));
        };
        Ok(Interpreter { table, ..interp })
    }

    /// A limit error, if this failure was one.
    fn classify(&self, e: &mlua::Error) -> Option<PluginError> {
        if let Some(kind) = self.budget.hit() {
            return Some(PluginError::Limit(kind));
        }
        if is_memory_error(e) {
            return Some(PluginError::Limit(LimitKind::Memory));
        }
        if describe(e).contains("stack overflow") {
            return Some(PluginError::Limit(LimitKind::Stack));
        }
        None
    }

    fn call(
        &self,
        hook: Hook,
        input: &HookInput,
        limits: &Limits,
    ) -> Result<Option<Decision>, PluginError> {
        let f: Function = self
            .table
            .raw_get(hook.lua_name())
            .map_err(|e| PluginError::Failed(describe(&e)))?;
        let ser = SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false);
        let conv = |e: mlua::Error| {
            self.classify(&e)
                .unwrap_or_else(|| PluginError::Failed(describe(&e)))
        };
        let args: MultiValue = match input {
            HookInput::AutoAssign(e) => [self.lua.to_value_with(e, ser).map_err(conv)?]
                .into_iter()
                .collect(),
            HookInput::Place(d) | HookInput::SetupSteps(d) => {
                [self.lua.to_value_with(d, ser).map_err(conv)?]
                    .into_iter()
                    .collect()
            }
            HookInput::Release(d, p) => [
                self.lua.to_value_with(d, ser).map_err(conv)?,
                self.lua.to_value_with(p, ser).map_err(conv)?,
            ]
            .into_iter()
            .collect(),
        };
        self.budget.arm(limits);
        let returned: Value = f.call(args).map_err(conv)?;
        let json: serde_json::Value = self
            .lua
            .from_value_with(
                returned,
                DeserializeOptions::new().deny_unsupported_types(true),
            )
            .map_err(|e| {
                self.classify(&e)
                    .unwrap_or_else(|| PluginError::Malformed(describe(&e)))
            })?;
        Decision::from_json(hook, &json).map_err(PluginError::Malformed)
    }
}

/// Remove what a policy plugin must not reach, and add the `pomona` table.
fn sandbox(
    lua: &Lua,
    name: &str,
    config: &PluginConfig,
    budget: &Arc<Budget>,
    limits: &Limits,
) -> mlua::Result<()> {
    let g = lua.globals();
    protect_pcall(lua, budget)?;
    for unsafe_global in [
        "dofile",
        "loadfile",
        "load",
        "require",
        "collectgarbage",
        "module",
    ] {
        g.raw_set(unsafe_global, Value::Nil)?;
    }
    // `string.dump` exposes bytecode; bytecode can't be loaded here, but leave nothing to try.
    let string: Table = g.raw_get("string")?;
    string.raw_set("dump", Value::Nil)?;
    // Lua's pattern matcher is C that backtracks without the instruction hook: use the metered
    // port instead (string methods resolve through this same table).
    lua_pattern::install(lua, &string, budget.clone(), limits.memory_bytes)?;
    bound_table_move(lua, &g.raw_get("table")?, budget)?;
    let os: Table = g.raw_get("os")?;
    let safe_os = lua.create_table()?;
    for f in ["time", "clock", "date", "difftime"] {
        safe_os.raw_set(f, os.raw_get::<Value>(f)?)?;
    }
    g.raw_set("os", safe_os)?;

    let pomona = lua.create_table()?;
    let plugin = name.to_owned();
    let b = budget.clone();
    let log = lua.create_function(move |_, args: MultiValue| {
        let text: Vec<String> = args
            .iter()
            .map(|v| v.to_string().unwrap_or_default())
            .collect();
        b.log.write(&plugin, LogLevel::Info, &text.join(" "));
        Ok(())
    })?;
    pomona.raw_set("log", log.clone())?;
    g.raw_set("print", log)?;
    pomona.raw_set(
        "now",
        lua.create_function(|_, ()| Ok(time::OffsetDateTime::now_utc().unix_timestamp()))?,
    )?;
    let cfg = lua.create_table()?;
    for (k, v) in config {
        cfg.raw_set(k.as_str(), v.as_str())?;
    }
    pomona.raw_set("config", cfg)?;
    g.raw_set("pomona", pomona)?;
    Ok(())
}

/// `table.move(a1, f, e, t)` copies `e - f + 1` slots in a C loop without the instruction hook
/// (`table.move({}, 1, 1e15, 2)` allocates nothing and runs for days): charge the count to the
/// instruction budget before running it.
fn bound_table_move(lua: &Lua, table: &Table, budget: &Arc<Budget>) -> mlua::Result<()> {
    let original: Function = table.raw_get("move")?;
    let b = budget.clone();
    let bounded = lua.create_function(move |lua, args: MultiValue| {
        let int = |i: usize| {
            args.get(i)
                .and_then(|v| lua.coerce_integer(v.clone()).ok().flatten())
        };
        if let (Some(f), Some(e)) = (int(1), int(2))
            && e >= f
        {
            let count = (i128::from(e) - i128::from(f) + 1).min(i128::from(u64::MAX)) as u64;
            if let Err(kind) = b.charge(count) {
                return Err(mlua::Error::runtime(format!(
                    "plugin exceeded its {kind} limit"
                )));
            }
        }
        original.call::<MultiValue>(args)
    })?;
    table.raw_set("move", bounded)
}

/// Replace `pcall` and `xpcall` with versions that catch plugin errors but re-raise limit hits,
/// so `while true do pcall(loop) end` still stops.
fn protect_pcall(lua: &Lua, budget: &Arc<Budget>) -> mlua::Result<()> {
    fn caught(budget: &Budget, e: mlua::Error) -> mlua::Result<String> {
        if is_memory_error(&e) {
            budget.set_hit(LimitKind::Memory);
        }
        match budget.hit() {
            Some(_) => Err(e),
            None => Ok(describe(&e)),
        }
    }
    let b = budget.clone();
    let pcall = lua.create_function(move |lua, (f, args): (Function, MultiValue)| {
        let mut out = MultiValue::new();
        match f.call::<MultiValue>(args) {
            Ok(values) => {
                out.push_back(Value::Boolean(true));
                out.extend(values);
            }
            Err(e) => {
                out.push_back(Value::Boolean(false));
                out.push_back(Value::String(lua.create_string(caught(&b, e)?)?));
            }
        }
        Ok(out)
    })?;
    let b = budget.clone();
    let xpcall = lua.create_function(
        move |lua, (f, handler, args): (Function, Function, MultiValue)| {
            let mut out = MultiValue::new();
            match f.call::<MultiValue>(args) {
                Ok(values) => {
                    out.push_back(Value::Boolean(true));
                    out.extend(values);
                }
                Err(e) => {
                    let message = lua.create_string(caught(&b, e)?)?;
                    out.push_back(Value::Boolean(false));
                    out.extend(handler.call::<MultiValue>(message)?);
                }
            }
            Ok(out)
        },
    )?;
    lua.globals().raw_set("pcall", pcall)?;
    lua.globals().raw_set("xpcall", xpcall)
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// A one-line description of a Lua error (no Rust debug noise, no traceback).
fn describe(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::WithContext { cause, .. } => describe(cause),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => m.lines().next().unwrap_or_default().to_owned(),
        other => other
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

#[cfg(test)]
#[path = "lua_tests.rs"]
mod tests;
