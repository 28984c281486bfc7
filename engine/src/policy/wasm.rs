//! The WASM runtime: wasmtime components implementing the `pomona:policy@0.1.0` world.
//!
//! The world is in `sdk/wit/since_v0.1.0/policy.wit`; Rust plugins use the `pomona-sdk` crate.
//! A component is compiled once, when it loads; calls run on instances taken from a small pool
//! (a fresh one is instantiated when the pool is empty). Each call gets a fuel budget
//! ([`Limits::instructions`]), a wall-clock deadline (epoch interruption, [`Limits::timeout`]) and
//! a cap on linear memory ([`Limits::memory_bytes`]); the wasm stack is bounded engine-wide. An
//! instance that trapped or hit a limit is thrown away, never reused.
//!
//! A plugin can import only `pomona:policy/host` (log, its own configuration, the time): there is
//! no WASI, so no files, network, environment, clocks or randomness. A component that imports
//! anything else does not load.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};

use super::plugin_log::{LogBudget, LogLevel};
use super::{
    Decision, Device, Hook, HookInput, LimitKind, Limits, PluginConfig, PluginError, PolicyPlugin,
    Progress,
};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/since_v0.1.0",
        world: "plugin",
    });
}

use bindings::pomona::policy::{host as wit_host, types as wit};

/// How often the deadline clock ticks.
const TICK: Duration = Duration::from_millis(5);

/// Bytes of wasm stack a call may use; deeper recursion is a [`LimitKind::Stack`] hit.
const MAX_WASM_STACK: usize = 512 << 10;

/// Most idle instances kept per plugin.
const POOL_MAX: usize = 8;

/// Longest error message kept from a plugin, in bytes.
const MESSAGE_BYTES: usize = 1024;

/// The one wasmtime engine all plugins share, and the thread that advances its epoch.
fn engine() -> Result<&'static Engine, PluginError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .consume_fuel(true)
                .epoch_interruption(true)
                .max_wasm_stack(MAX_WASM_STACK);
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("pomona-wasm-epoch".into())
                .spawn(move || {
                    while let Some(engine) = ticker.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(TICK);
                    }
                })
                .map_err(|e| format!("starting the deadline thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(|e| PluginError::Load(format!("the WASM runtime did not start: {e}")))
}

/// What one instance's store holds: the host functions' state and the memory limiter.
struct HostState {
    plugin: Arc<str>,
    config: Arc<PluginConfig>,
    log: LogBudget,
    memory: MemoryCap,
}

/// Refuses linear-memory growth past the plugin's limit, and remembers that it did.
struct MemoryCap {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a policy plugin needs few.
        Ok(desired <= 100_000)
    }
}

impl wit::Host for HostState {}

impl wit_host::Host for HostState {
    fn log(&mut self, level: wit_host::Level, message: String) {
        let level = match level {
            wit_host::Level::Debug => LogLevel::Debug,
            wit_host::Level::Info => LogLevel::Info,
            wit_host::Level::Warn => LogLevel::Warn,
            wit_host::Level::Error => LogLevel::Error,
        };
        self.log.write(&self.plugin, level, &message);
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn config_keys(&mut self) -> Vec<String> {
        self.config.keys().cloned().collect()
    }

    fn now(&mut self) -> u64 {
        time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
    }
}

/// One ready instance and its store.
struct Instance {
    store: Store<HostState>,
    plugin: bindings::Plugin,
    /// Trapped or hit a limit: never call it again.
    poisoned: bool,
}

/// A loaded WASM plugin: the compiled component and a pool of instances.
pub struct WasmPlugin {
    name: Arc<str>,
    config: Arc<PluginConfig>,
    limits: Limits,
    pre: bindings::PluginPre<HostState>,
    hooks: Vec<Hook>,
    pool: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for WasmPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPlugin")
            .field("name", &self.name)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl WasmPlugin {
    /// Compile and self-check a component: it must implement `pomona:policy@0.1.0`, import
    /// nothing else, instantiate within `limits` and answer `hooks` with at least one hook.
    pub fn load(
        name: &str,
        bytes: &[u8],
        config: &PluginConfig,
        limits: Limits,
    ) -> Result<WasmPlugin, PluginError> {
        if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(PluginError::Load(
                "this is a core WebAssembly module, not a component: build the plugin with \
                 pomona-sdk and wrap it as a component (scripts/build-plugins.sh does both)"
                    .into(),
            ));
        }
        let engine = engine()?;
        let component = Component::from_binary(engine, bytes)
            .map_err(|e| PluginError::Load(format!("not a valid WebAssembly component: {e:#}")))?;
        let mut linker = Linker::new(engine);
        bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Load(format!("linking the host functions: {e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            PluginError::Load(format!(
                "the component needs imports the engine does not offer (a plugin may import \
                 only pomona:policy/host@0.1.0, and no WASI): {}",
                chain_message(&e)
            ))
        })?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| {
            PluginError::Load(format!(
                "the component does not export the pomona:policy@0.1.0 plugin world: {}",
                chain_message(&e)
            ))
        })?;
        let mut plugin = WasmPlugin {
            name: Arc::from(name),
            config: Arc::new(config.clone()),
            limits,
            pre,
            hooks: Vec::new(),
            pool: Mutex::new(Vec::new()),
        };
        let mut first = plugin
            .instantiate()
            .map_err(|e| PluginError::Load(format!("instantiating: {e}")))?;
        let declared = plugin.run(&mut first, |p, s| p.call_hooks(s));
        let mut hooks: Vec<Hook> = match declared {
            Ok(h) => h.into_iter().map(hook_from_wit).collect(),
            Err(e) => return Err(PluginError::Load(format!("calling hooks: {e}"))),
        };
        hooks.sort();
        hooks.dedup();
        if hooks.is_empty() {
            return Err(PluginError::Load(
                "hooks() returned no hooks: list the ones the plugin answers".into(),
            ));
        }
        plugin.hooks = hooks;
        plugin.pool.lock().expect("pool lock").push(first);
        Ok(plugin)
    }

    /// A new instance, its start-up bounded by the plugin's limits.
    fn instantiate(&self) -> Result<Instance, PluginError> {
        let state = HostState {
            plugin: self.name.clone(),
            config: self.config.clone(),
            log: LogBudget::default(),
            memory: MemoryCap {
                max_bytes: self.limits.memory_bytes,
                refused: false,
            },
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.memory);
        self.arm(&mut store)?;
        let result = self.pre.instantiate(&mut store);
        store.data().log.finish(&self.name);
        match result {
            Ok(plugin) => Ok(Instance {
                store,
                plugin,
                poisoned: false,
            }),
            Err(e) => Err(classify(&e, &store)),
        }
    }

    /// Give `store` a fresh budget for one call.
    fn arm(&self, store: &mut Store<HostState>) -> Result<(), PluginError> {
        store
            .set_fuel(self.limits.instructions)
            .map_err(|e| PluginError::Failed(format!("setting fuel: {e}")))?;
        let ticks = self.limits.timeout.as_nanos().div_ceil(TICK.as_nanos()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let state = store.data_mut();
        state.memory.refused = false;
        state.log.reset();
        Ok(())
    }

    /// Run `f` on `instance` within the limits. A trap or limit hit poisons the instance.
    fn run<T>(
        &self,
        instance: &mut Instance,
        f: impl FnOnce(&bindings::Plugin, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.arm(&mut instance.store)?;
        let result = f(&instance.plugin, &mut instance.store);
        instance.store.data().log.finish(&self.name);
        result.map_err(|e| {
            instance.poisoned = true;
            classify(&e, &instance.store)
        })
    }

    fn call_hook(
        &self,
        instance: &mut Instance,
        input: &HookInput,
    ) -> Result<Option<Decision>, PluginError> {
        let hook = input.hook();
        let answer: Result<Value, String> = match input {
            HookInput::AutoAssign(e) => {
                let e = dep_event_to_wit(e);
                self.run(instance, |p, s| p.call_auto_assign(s, &e))?
                    .map(|d| d.map_or(Value::Null, |d| assign_to_json(&d)))
            }
            HookInput::Place(d) => {
                let d = device_to_wit(d);
                self.run(instance, |p, s| p.call_place(s, &d))?
                    .map(|d| d.map_or(Value::Null, |d| place_to_json(&d)))
            }
            HookInput::SetupSteps(d) => {
                let d = device_to_wit(d);
                match self.run(instance, |p, s| p.call_setup_steps(s, &d))? {
                    Ok(Some(steps)) => Ok(steps_to_json(&steps)?),
                    Ok(None) => Ok(Value::Null),
                    Err(e) => Err(e),
                }
            }
            HookInput::Release(d, progress) => {
                let (d, progress) = (device_to_wit(d), progress_to_wit(progress));
                self.run(instance, |p, s| p.call_release(s, &d, &progress))?
                    .map(|d| d.map_or(Value::Null, |d| release_to_json(&d)))
            }
        };
        let answer = answer.map_err(|e| PluginError::Failed(truncate(e)))?;
        Decision::from_json(hook, &answer).map_err(PluginError::Malformed)
    }
}

impl PolicyPlugin for WasmPlugin {
    fn hooks(&self) -> Vec<Hook> {
        self.hooks.clone()
    }

    fn call(&self, input: &HookInput) -> Result<Option<Decision>, PluginError> {
        if !self.hooks.contains(&input.hook()) {
            return Ok(None);
        }
        let pooled = self.pool.lock().expect("pool lock").pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => self.instantiate()?,
        };
        let result = self.call_hook(&mut instance, input);
        // A trap leaves an instance unusable, and a limit hit may leave it mid-way through
        // anything: only instances that returned normally go back to the pool.
        if !instance.poisoned {
            let mut pool = self.pool.lock().expect("pool lock");
            if pool.len() < POOL_MAX {
                pool.push(instance);
            }
        }
        result
    }
}

fn truncate(message: String) -> String {
    let mut m = message;
    if m.len() > MESSAGE_BYTES {
        m.truncate(m.floor_char_boundary(MESSAGE_BYTES));
        m.push('…');
    }
    format!("returned an error: {m}")
}

/// What a wasmtime error means for the call: a limit hit, or a trap with its reason.
fn classify(e: &wasmtime::Error, store: &Store<HostState>) -> PluginError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::Limit(LimitKind::Instructions),
        Some(Trap::Interrupt) => PluginError::Limit(LimitKind::Timeout),
        Some(Trap::StackOverflow) => PluginError::Limit(LimitKind::Stack),
        // A refused memory.grow makes a Rust guest abort; whatever trap follows is that.
        _ if store.data().memory.refused => PluginError::Limit(LimitKind::Memory),
        Some(trap) => PluginError::Failed(format!("trapped: {trap}")),
        None => PluginError::Failed(chain_message(e)),
    }
}

/// An error and its causes, on one line.
fn chain_message(e: &wasmtime::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn hook_from_wit(h: wit::Hook) -> Hook {
    match h {
        wit::Hook::AutoAssign => Hook::AutoAssign,
        wit::Hook::Place => Hook::Place,
        wit::Hook::SetupSteps => Hook::SetupSteps,
        wit::Hook::Release => Hook::Release,
    }
}

fn dep_event_to_wit(e: &super::DepEvent) -> wit::DepEvent {
    use super::OpType;
    wit::DepEvent {
        server: e.server.clone(),
        serial_number: e.serial_number.clone(),
        model: e.model.clone(),
        description: e.description.clone(),
        color: e.color.clone(),
        device_family: e.device_family.clone(),
        os: e.os.clone(),
        profile_status: e.profile_status.clone(),
        profile_uuid: e.profile_uuid.clone(),
        op_type: match e.op_type {
            OpType::Added => wit::OpType::Added,
            OpType::Modified => wit::OpType::Modified,
            OpType::Deleted => wit::OpType::Deleted,
            OpType::Fetched => wit::OpType::Fetched,
        },
        op_date: e.op_date.clone(),
        known: e.known,
        team: e.team.clone(),
    }
}

fn device_to_wit(d: &Device) -> wit::Device {
    use super::Stage;
    wit::Device {
        serial_number: d.serial_number.clone(),
        udid: d.udid.clone(),
        model: d.model.clone(),
        device_family: d.device_family.clone(),
        os: d.os.clone(),
        os_version: d.os_version.clone(),
        dep_server: d.dep_server.clone(),
        stage: match d.stage {
            Stage::Synced => wit::Stage::Synced,
            Stage::Enrolling => wit::Stage::Enrolling,
            Stage::Enrolled => wit::Stage::Enrolled,
        },
        team: d.team.clone(),
        user: d.user.as_ref().map(|u| wit::UserIdentity {
            username: u.username.clone(),
            email: u.email.clone(),
            groups: u.groups.clone(),
        }),
    }
}

fn progress_to_wit(p: &Progress) -> wit::Progress {
    use super::StepStatus;
    wit::Progress {
        steps: p
            .steps
            .iter()
            .map(|s| wit::StepProgress {
                id: s.id.clone(),
                required: s.required,
                status: match s.status {
                    StepStatus::Pending => wit::StepStatus::Pending,
                    StepStatus::Running => wit::StepStatus::Running,
                    StepStatus::Succeeded => wit::StepStatus::Succeeded,
                    StepStatus::Failed => wit::StepStatus::Failed,
                    StepStatus::Skipped => wit::StepStatus::Skipped,
                },
                attempts: s.attempts,
            })
            .collect(),
        elapsed_secs: p.elapsed_secs,
    }
}

// Answers are turned into the Lua shape and validated by `Decision::from_json`, the one validator
// every runtime shares.

fn assign_to_json(d: &wit::AssignDecision) -> Value {
    match d {
        wit::AssignDecision::Assign(p) => json!({ "assign": p }),
        wit::AssignDecision::Skip => json!({ "skip": true }),
        wit::AssignDecision::RetryAfter(s) => json!({ "retry_after": s }),
    }
}

fn place_to_json(d: &wit::PlaceDecision) -> Value {
    match d {
        wit::PlaceDecision::Team(t) => json!({ "team": t }),
        wit::PlaceDecision::NoTeam => json!({ "no_team": true }),
    }
}

fn release_to_json(d: &wit::ReleaseDecision) -> Value {
    match d {
        wit::ReleaseDecision::Release => json!("release"),
        wit::ReleaseDecision::Wait(s) => json!({ "wait": s }),
        wit::ReleaseDecision::Hold(r) => json!({ "hold": r }),
    }
}

/// Steps in the Lua shape; a command whose parameters are not JSON is a malformed answer.
fn steps_to_json(steps: &[wit::Step]) -> Result<Value, PluginError> {
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let (key, val) = match &s.action {
            wit::StepAction::InstallProfile(p) => ("install_profile", json!(p)),
            wit::StepAction::InstallPackage(p) => (
                "install_package",
                json!({ "url": p.url, "manifest_url": p.manifest_url }),
            ),
            wit::StepAction::Account(a) => (
                "account",
                json!({
                    "username": a.username,
                    "full_name": a.full_name,
                    "lock": a.lock,
                    "admin": a.admin,
                }),
            ),
            wit::StepAction::Command(c) => {
                let parameters: Value = serde_json::from_str(&c.parameters_json).map_err(|e| {
                    PluginError::Malformed(format!(
                        "step {}: command.parameters-json is not JSON: {e}",
                        i + 1
                    ))
                })?;
                (
                    "command",
                    json!({ "request_type": c.request_type, "parameters": parameters }),
                )
            }
        };
        out.push(json!({ "id": s.id, "required": s.required, key: val }));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
#[path = "wasm_tests.rs"]
mod tests;
