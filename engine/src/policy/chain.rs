//! The ordered plugin chain: first definite decision wins; failures fall through.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;

use super::stats::{Outcome, PluginStats, StatsSnapshot};
use super::{
    AssignDecision, Decision, DepEvent, Device, Hook, HookInput, PlaceDecision, PluginError,
    PolicyPlugin, Progress, ReleaseDecision, Step,
};
use crate::events::{Outbox, event, kind};

/// The runtime a plugin runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Runtime {
    /// A `.lua` file.
    Lua,
    /// A `.wasm` component.
    Wasm,
}

/// A plugin in the chain, with its identity and counters.
pub struct LoadedPlugin {
    /// Unique name.
    pub name: String,
    /// Runtime.
    pub runtime: Runtime,
    /// SHA-256 (hex) of the source the plugin was loaded from.
    pub sha256: String,
    /// The hooks it answers, as declared (a subset of what the plugin implements).
    pub hooks: Vec<Hook>,
    /// Call counters.
    pub stats: PluginStats,
    plugin: Box<dyn PolicyPlugin>,
    last_event: Mutex<Option<Instant>>,
    breaker: Mutex<Breaker>,
}

/// Consecutive failures after which a plugin is skipped for [`QUARANTINE`].
pub const TRIP_AFTER: u32 = 5;
/// How long a plugin that keeps failing is skipped (its hooks fall through without a call).
pub const QUARANTINE: Duration = Duration::from_secs(60);

/// Keeps a plugin that fails call after call (say, one that loops to its time limit on every
/// device) from slowing every decision down: after [`TRIP_AFTER`] failures in a row it is skipped
/// for [`QUARANTINE`], then tried again.
#[derive(Debug, Default)]
struct Breaker {
    consecutive: u32,
    open_until: Option<Instant>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("runtime", &self.runtime)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// Wrap a plugin. `hooks` restricts it to some of its hooks (`None`: all it implements).
    pub fn new(
        name: &str,
        runtime: Runtime,
        source: &[u8],
        plugin: Box<dyn PolicyPlugin>,
        hooks: Option<&[Hook]>,
    ) -> Self {
        let implemented = plugin.hooks();
        let hooks = match hooks {
            Some(h) => h
                .iter()
                .copied()
                .filter(|h| implemented.contains(h))
                .collect(),
            None => implemented,
        };
        LoadedPlugin {
            name: name.to_owned(),
            runtime,
            sha256: hex::encode(openssl::sha::sha256(source)),
            hooks,
            stats: PluginStats::default(),
            plugin,
            last_event: Mutex::new(None),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    /// Whether the plugin is being skipped after failing too often in a row.
    pub fn quarantined(&self) -> bool {
        let b = self.breaker.lock().expect("breaker lock");
        b.open_until.is_some_and(|t| Instant::now() < t)
    }

    fn note(&self, failed: bool) {
        let mut b = self.breaker.lock().expect("breaker lock");
        if !failed {
            *b = Breaker::default();
            return;
        }
        b.consecutive += 1;
        if b.consecutive >= TRIP_AFTER {
            b.open_until = Some(Instant::now() + QUARANTINE);
            b.consecutive = 0;
        }
    }

    /// Call the plugin directly (no chain, no events), recording stats.
    pub fn call(&self, input: &HookInput) -> Result<Option<Decision>, PluginError> {
        let hook = input.hook();
        let started = Instant::now();
        let result = self.plugin.call(input).and_then(|d| match d {
            Some(d) if !decision_fits(hook, &d) => Err(PluginError::Malformed(format!(
                "a {} decision is not an answer to {hook}",
                decision_hook(&d)
            ))),
            other => Ok(other),
        });
        let outcome = match &result {
            Ok(Some(_)) => Outcome::Decision,
            Ok(None) => Outcome::NoOpinion,
            Err(e) => Outcome::Error(e),
        };
        self.stats.record(hook, started.elapsed(), outcome);
        self.note(result.is_err());
        result
    }

    /// What the API shows about this plugin.
    pub fn describe(&self) -> PluginInfo {
        PluginInfo {
            name: self.name.clone(),
            runtime: self.runtime,
            sha256: self.sha256.clone(),
            hooks: self.hooks.clone(),
            quarantined: self.quarantined(),
            stats: self.stats.snapshot(),
        }
    }
}

fn decision_hook(d: &Decision) -> Hook {
    match d {
        Decision::Assign(_) => Hook::AutoAssign,
        Decision::Place(_) => Hook::Place,
        Decision::Steps(_) => Hook::SetupSteps,
        Decision::Release(_) => Hook::Release,
    }
}

fn decision_fits(hook: Hook, d: &Decision) -> bool {
    decision_hook(d) == hook
}

/// A plugin as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Runtime.
    pub runtime: Runtime,
    /// SHA-256 of its source.
    pub sha256: String,
    /// Hooks it answers.
    pub hooks: Vec<Hook>,
    /// Skipped for now after failing too often in a row.
    pub quarantined: bool,
    /// Counters and latency.
    pub stats: StatsSnapshot,
}

/// A decision and who made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided<T> {
    /// The decision.
    pub decision: T,
    /// The plugin's name, or `"default"` for the caller's built-in default.
    pub by: String,
}

/// At most one `plugin.failed` event per plugin per this interval (counters see every failure).
const EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// Most plugin decisions running at once, each on its own blocking thread.
pub const MAX_CONCURRENT_CALLS: usize = 8;

/// Plugins in order, swapped atomically on reload.
pub struct PolicyChain {
    plugins: RwLock<Arc<Vec<Arc<LoadedPlugin>>>>,
    outbox: Option<Outbox>,
    /// Plugin calls are CPU work of up to one timeout each: they run on tokio's blocking pool,
    /// never on an async worker, and at most [`MAX_CONCURRENT_CALLS`] at once (a flood of
    /// decisions waits here instead of starting a thread each).
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for PolicyChain {
    fn default() -> Self {
        PolicyChain::new(None)
    }
}

impl std::fmt::Debug for PolicyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins().iter()).finish()
    }
}

impl PolicyChain {
    /// An empty chain (every decision falls to the default) that reports failures to `outbox`.
    pub fn new(outbox: Option<Outbox>) -> Self {
        PolicyChain {
            plugins: RwLock::default(),
            outbox,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS)),
        }
    }

    /// The current plugins, in order.
    pub fn plugins(&self) -> Arc<Vec<Arc<LoadedPlugin>>> {
        self.plugins.read().expect("chain lock").clone()
    }

    /// Replace the whole chain at once: calls in flight finish on the old one.
    pub fn replace(&self, plugins: Vec<Arc<LoadedPlugin>>) {
        *self.plugins.write().expect("chain lock") = Arc::new(plugins);
    }

    /// Add `plugin` at the end, or replace the plugin of the same name in its place.
    pub fn upsert(&self, plugin: Arc<LoadedPlugin>) {
        let mut guard = self.plugins.write().expect("chain lock");
        let mut next: Vec<_> = guard.iter().cloned().collect();
        match next.iter().position(|p| p.name == plugin.name) {
            Some(i) => next[i] = plugin,
            None => next.push(plugin),
        }
        *guard = Arc::new(next);
    }

    /// Remove the plugin named `name`; whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        let mut guard = self.plugins.write().expect("chain lock");
        let before = guard.len();
        let next: Vec<_> = guard.iter().filter(|p| p.name != name).cloned().collect();
        let removed = next.len() != before;
        *guard = Arc::new(next);
        removed
    }

    /// Ask each plugin that answers this hook, in order; the first definite decision wins.
    /// `None`: every plugin had no opinion (or failed) and the caller's default decides.
    ///
    /// The calls run on the blocking pool (see [`MAX_CONCURRENT_CALLS`]), so a plugin running
    /// into its time limit never holds up an async worker.
    pub async fn decide(&self, input: &HookInput) -> Option<Decided<Decision>> {
        self.decide_on(input, Thread::Pool).await
    }

    /// [`Self::decide`] for a caller that asks one decision at a time in a loop (DEP sync): on a
    /// multi-threaded runtime the calls run on the calling thread, which first hands its other
    /// async work to another worker (`block_in_place`), so there is no thread hop per decision.
    /// Futures polled together with this one in the same task wait for it; callers that want
    /// several decisions at once use [`Self::decide`].
    pub async fn decide_in_place(&self, input: &HookInput) -> Option<Decided<Decision>> {
        self.decide_on(input, Thread::InPlace).await
    }

    async fn decide_on(&self, input: &HookInput, thread: Thread) -> Option<Decided<Decision>> {
        let hook = input.hook();
        let plugins: Vec<Arc<LoadedPlugin>> = self
            .plugins()
            .iter()
            .filter(|p| p.hooks.contains(&hook))
            .cloned()
            .collect();
        if plugins.is_empty() {
            return None;
        }
        let (decided, failures) = {
            let _slot = self
                .slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let input = input.clone();
            let call = move || ask(&plugins, &input);
            let in_place = thread == Thread::InPlace
                && tokio::runtime::Handle::current().runtime_flavor()
                    == tokio::runtime::RuntimeFlavor::MultiThread;
            let answer = if in_place {
                Ok(tokio::task::block_in_place(call))
            } else {
                tokio::task::spawn_blocking(call).await
            };
            match answer {
                Ok(answer) => answer,
                Err(err) => {
                    tracing::error!(%hook, error = %err, "plugin call panicked; counted as no opinion");
                    (None, Vec::new())
                }
            }
        };
        for (p, e) in failures {
            self.report(&p, hook, &e).await;
        }
        decided
    }

    async fn report(&self, p: &LoadedPlugin, hook: Hook, e: &PluginError) {
        tracing::warn!(plugin = %p.name, %hook, error = %e, "plugin call counted as no opinion");
        let Some(outbox) = &self.outbox else { return };
        {
            let mut last = p.last_event.lock().expect("event lock");
            if last.is_some_and(|t| t.elapsed() < EVENT_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let data = json!({
            "plugin": p.name,
            "hook": hook,
            "error": e.to_string(),
            "limit": matches!(e, PluginError::Limit(_)),
        });
        if let Err(err) = outbox
            .publish(vec![event(kind::PLUGIN_FAILED, None, data)])
            .await
        {
            tracing::warn!(error = %err, "could not record plugin.failed");
        }
    }

    /// `auto-assign`, falling back to `default`. Asked one device at a time by DEP sync, so it
    /// runs [in place](Self::decide_in_place).
    pub async fn auto_assign(
        &self,
        e: &DepEvent,
        default: impl FnOnce() -> AssignDecision,
    ) -> Decided<AssignDecision> {
        match self
            .decide_in_place(&HookInput::AutoAssign(e.clone()))
            .await
        {
            Some(Decided {
                decision: Decision::Assign(d),
                by,
            }) => Decided { decision: d, by },
            _ => by_default(default()),
        }
    }

    /// `place`, falling back to `default` (`None`: leave the team as it is).
    pub async fn place(
        &self,
        d: &Device,
        default: impl FnOnce() -> Option<PlaceDecision>,
    ) -> Option<Decided<PlaceDecision>> {
        match self.decide(&HookInput::Place(d.clone())).await {
            Some(Decided {
                decision: Decision::Place(p),
                by,
            }) => Some(Decided { decision: p, by }),
            _ => default().map(by_default),
        }
    }

    /// `setup-steps`, falling back to `default`.
    pub async fn setup_steps(
        &self,
        d: &Device,
        default: impl FnOnce() -> Vec<Step>,
    ) -> Decided<Vec<Step>> {
        match self.decide(&HookInput::SetupSteps(d.clone())).await {
            Some(Decided {
                decision: Decision::Steps(s),
                by,
            }) => Decided { decision: s, by },
            _ => by_default(default()),
        }
    }

    /// `release`, falling back to `default`.
    pub async fn release(
        &self,
        d: &Device,
        p: &Progress,
        default: impl FnOnce() -> ReleaseDecision,
    ) -> Decided<ReleaseDecision> {
        match self.decide(&HookInput::Release(d.clone(), p.clone())).await {
            Some(Decided {
                decision: Decision::Release(r),
                by,
            }) => Decided { decision: r, by },
            _ => by_default(default()),
        }
    }
}

/// Where a decision's plugin calls run: never as async work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thread {
    /// A thread of tokio's blocking pool.
    Pool,
    /// The calling thread, after it handed its async work to another worker (on a
    /// current-thread runtime, the blocking pool).
    InPlace,
}

/// The failures of one decision, to report after it.
type Failures = Vec<(Arc<LoadedPlugin>, PluginError)>;

/// The synchronous part of [`PolicyChain::decide`]: call `plugins` in order until one decides.
fn ask(plugins: &[Arc<LoadedPlugin>], input: &HookInput) -> (Option<Decided<Decision>>, Failures) {
    let mut failures = Vec::new();
    for p in plugins {
        if p.quarantined() {
            p.stats.record_skip();
            continue;
        }
        match p.call(input) {
            Ok(Some(decision)) => {
                let by = p.name.clone();
                return (Some(Decided { decision, by }), failures);
            }
            Ok(None) => {}
            Err(e) => failures.push((p.clone(), e)),
        }
    }
    (None, failures)
}

fn by_default<T>(decision: T) -> Decided<T> {
    Decided {
        decision,
        by: "default".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::LimitKind;

    /// A plugin whose every answer is scripted.
    struct Scripted(Hook, Result<Option<Decision>, PluginError>);

    impl PolicyPlugin for Scripted {
        fn hooks(&self) -> Vec<Hook> {
            vec![self.0]
        }
        fn call(&self, _: &HookInput) -> Result<Option<Decision>, PluginError> {
            self.1.clone()
        }
    }

    fn plugin(
        name: &str,
        hook: Hook,
        answer: Result<Option<Decision>, PluginError>,
    ) -> Arc<LoadedPlugin> {
        Arc::new(LoadedPlugin::new(
            name,
            Runtime::Lua,
            name.as_bytes(),
            Box::new(Scripted(hook, answer)),
            None,
        ))
    }

    fn dep_event() -> DepEvent {
        serde_json::from_value(json!({"server": "hq", "serial_number": "C02X", "op_type": "added"}))
            .unwrap()
    }

    fn assign(p: &str) -> Result<Option<Decision>, PluginError> {
        Ok(Some(Decision::Assign(AssignDecision::Assign(p.into()))))
    }

    #[tokio::test]
    async fn first_definite_decision_wins_and_failures_fall_through() {
        let chain = PolicyChain::new(None);
        chain.replace(vec![
            plugin("silent", Hook::AutoAssign, Ok(None)),
            plugin(
                "broken",
                Hook::AutoAssign,
                Err(PluginError::Failed("attempt to index nil".into())),
            ),
            plugin(
                "looping",
                Hook::AutoAssign,
                Err(PluginError::Limit(LimitKind::Instructions)),
            ),
            plugin(
                "confused",
                Hook::AutoAssign,
                Ok(Some(Decision::Place(PlaceDecision::NoTeam))),
            ),
            plugin(
                "placer",
                Hook::Place,
                Ok(Some(Decision::Place(PlaceDecision::NoTeam))),
            ),
            plugin("rules", Hook::AutoAssign, assign("standard")),
            plugin("late", Hook::AutoAssign, assign("never")),
        ]);
        let d = chain
            .auto_assign(&dep_event(), || AssignDecision::Skip)
            .await;
        assert_eq!(
            d,
            Decided {
                decision: AssignDecision::Assign("standard".into()),
                by: "rules".into()
            }
        );
        let stats: Vec<_> = chain.plugins().iter().map(|p| p.stats.snapshot()).collect();
        assert_eq!(stats[0].no_opinion, 1);
        assert_eq!(stats[1].errors, 1);
        assert_eq!(stats[2].limit_hits, 1);
        assert_eq!(
            stats[3].errors, 1,
            "a decision for another hook is malformed"
        );
        let last = stats[3].last_error.as_deref().unwrap();
        assert!(
            last.contains("a place decision is not an answer to auto-assign"),
            "{last}"
        );
        assert_eq!(stats[4].calls, 0, "a plugin is asked only for its hooks");
        assert_eq!(stats[6].calls, 0, "nobody is asked after a decision");
    }

    #[tokio::test]
    async fn a_plugin_that_keeps_failing_is_skipped_for_a_while() {
        let chain = PolicyChain::new(None);
        chain.replace(vec![plugin(
            "looping",
            Hook::AutoAssign,
            Err(PluginError::Limit(LimitKind::Timeout)),
        )]);
        for _ in 0..(TRIP_AFTER + 10) {
            chain
                .auto_assign(&dep_event(), || AssignDecision::Skip)
                .await;
        }
        let p = &chain.plugins()[0];
        let s = p.stats.snapshot();
        assert_eq!((s.limit_hits, s.skipped), (u64::from(TRIP_AFTER), 10));
        assert!(p.describe().quarantined);
        // Success resets the count (a flaky plugin is not quarantined).
        let flaky = plugin("flaky", Hook::AutoAssign, Ok(None));
        for _ in 0..(TRIP_AFTER - 1) {
            flaky.note(true);
        }
        flaky.note(false);
        flaky.note(true);
        assert!(!flaky.quarantined());
    }

    #[tokio::test]
    async fn the_default_decides_last() {
        let chain = PolicyChain::new(None);
        chain.replace(vec![plugin(
            "broken",
            Hook::AutoAssign,
            Err(PluginError::Failed("x".into())),
        )]);
        let d = chain
            .auto_assign(&dep_event(), || {
                AssignDecision::Assign("default-profile".into())
            })
            .await;
        assert_eq!(d.by, "default");
        assert_eq!(d.decision, AssignDecision::Assign("default-profile".into()));
    }

    /// A plugin call running into its time limit must not hold up the async runtime: here, the
    /// only thread of a current-thread runtime.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_plugin_does_not_block_the_runtime() {
        let slow = crate::policy::lua::LuaPlugin::load(
            "slow",
            "return { auto_assign = function(e) while true do end end }",
            &Default::default(),
            crate::policy::Limits {
                instructions: u64::MAX / 2,
                timeout: Duration::from_secs(2),
                ..Default::default()
            },
        )
        .unwrap();
        let chain = Arc::new(PolicyChain::new(None));
        chain.replace(vec![Arc::new(LoadedPlugin::new(
            "slow",
            Runtime::Lua,
            b"slow",
            Box::new(slow),
            None,
        ))]);
        let c = chain.clone();
        let call =
            tokio::spawn(async move { c.auto_assign(&dep_event(), || AssignDecision::Skip).await });
        // Let the call start, then check that this task runs again while it is still going.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !call.is_finished(),
            "the runtime was blocked until the plugin call ended"
        );
        let d = call.await.unwrap();
        assert_eq!(d.by, "default");
        assert_eq!(chain.plugins()[0].stats.snapshot().limit_hits, 1);
    }

    #[tokio::test]
    async fn upsert_replaces_in_place_and_remove_removes() {
        let chain = PolicyChain::new(None);
        chain.upsert(plugin("a", Hook::AutoAssign, assign("one")));
        chain.upsert(plugin("b", Hook::AutoAssign, assign("two")));
        chain.upsert(plugin("a", Hook::AutoAssign, assign("three")));
        let names: Vec<_> = chain.plugins().iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        let d = chain
            .auto_assign(&dep_event(), || AssignDecision::Skip)
            .await;
        assert_eq!(d.decision, AssignDecision::Assign("three".into()));
        assert!(chain.remove("a"));
        assert!(!chain.remove("a"));
        let d = chain
            .auto_assign(&dep_event(), || AssignDecision::Skip)
            .await;
        assert_eq!(d.decision, AssignDecision::Assign("two".into()));
    }
}
