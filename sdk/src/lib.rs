//! Write Pomona policy plugins in Rust.
//!
//! A plugin is a WebAssembly component implementing the `pomona:policy@0.1.0` world
//! (`wit/since_v0.1.0/policy.wit`). With this crate you implement [`Plugin`] — every hook has a
//! default answer of "no opinion" — and export it with [`export_plugin!`]:
//!
//! ```ignore
//! use pomona_sdk::{AssignDecision, DepEvent, Hook, Plugin, export_plugin, host};
//!
//! struct Laptops;
//!
//! impl Plugin for Laptops {
//!     fn hooks() -> Vec<Hook> {
//!         vec![Hook::AutoAssign]
//!     }
//!
//!     fn auto_assign(event: DepEvent) -> Result<Option<AssignDecision>, String> {
//!         if event.model.starts_with("MacBook") {
//!             let profile = host::config("laptop-profile").unwrap_or_else(|| "laptops".into());
//!             return Ok(Some(AssignDecision::Assign(profile)));
//!         }
//!         Ok(None) // no opinion: the next plugin, or the engine's default, decides
//!     }
//! }
//!
//! export_plugin!(Laptops);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown` (crate type `cdylib`),
//! turn the core module into a component (`scripts/build-plugins.sh` does both), and test it with
//! `pomona plugin test plugin.wasm --hook auto-assign --fixture events.json`.
//!
//! An `Err` answer or a panic counts as "no opinion" for that call and is recorded against the
//! plugin; so does running out of fuel, memory or time. The engine keeps serving either way.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "wit/since_v0.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "export",
        additional_derives: [PartialEq, Eq],
    });
}

pub use bindings::pomona::policy::types::{
    AccountStep, AssignDecision, CommandStep, DepEvent, Device, Hook, OpType, PackageStep,
    PlaceDecision, Progress, ReleaseDecision, Stage, Step, StepAction, StepProgress, StepStatus,
    UserIdentity,
};

/// What the engine offers a plugin: logging, its configuration and the time.
pub mod host {
    use super::bindings::pomona::policy::host as wit;

    pub use wit::Level;

    /// Write `message` to the engine's log at `level`, tagged with the plugin's name.
    pub fn log(level: Level, message: &str) {
        wit::log(level, message);
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }

    /// This plugin's configuration value for `key`.
    pub fn config(key: &str) -> Option<String> {
        wit::config_get(key)
    }

    /// Every configuration key this plugin has, sorted.
    pub fn config_keys() -> Vec<String> {
        wit::config_keys()
    }

    /// Every `(key, value)` whose key starts with `prefix`, with the prefix removed, sorted by key.
    ///
    /// For rule tables in configuration: with `serial.C02=mac` and `serial.F9=ipad`,
    /// `config_with_prefix("serial.")` is `[("C02", "mac"), ("F9", "ipad")]`.
    pub fn config_with_prefix(prefix: &str) -> Vec<(String, String)> {
        config_keys()
            .into_iter()
            .filter_map(|key| {
                let rest = key.strip_prefix(prefix)?.to_owned();
                Some((rest, config(&key)?))
            })
            .collect()
    }

    /// The current time, in seconds since the Unix epoch.
    pub fn now() -> u64 {
        wit::now()
    }
}

/// A policy plugin: answer any of the four hooks; each defaults to "no opinion" (`Ok(None)`).
///
/// List the hooks you implement in [`Plugin::hooks`]: the engine calls no others.
pub trait Plugin {
    /// The hooks this plugin answers.
    fn hooks() -> Vec<Hook>;

    /// Which enrollment profile an Apple Business Manager device gets.
    fn auto_assign(event: DepEvent) -> Result<Option<AssignDecision>, String> {
        let _ = event;
        Ok(None)
    }

    /// Which team a device belongs to.
    fn place(device: Device) -> Result<Option<PlaceDecision>, String> {
        let _ = device;
        Ok(None)
    }

    /// What the engine installs while Setup Assistant waits; `Some(vec![])` is "nothing to do".
    fn setup_steps(device: Device) -> Result<Option<Vec<Step>>, String> {
        let _ = device;
        Ok(None)
    }

    /// When a device leaves Setup Assistant.
    fn release(device: Device, progress: Progress) -> Result<Option<ReleaseDecision>, String> {
        let _ = (device, progress);
        Ok(None)
    }
}

/// Export a [`Plugin`] implementation as the component's `pomona:policy@0.1.0` exports.
///
/// Use it once per plugin crate, at the crate root: `pomona_sdk::export_plugin!(MyPlugin);`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct PomonaExports;

            impl $crate::bindings::Guest for PomonaExports {
                fn hooks() -> ::std::vec::Vec<$crate::Hook> {
                    <$plugin as $crate::Plugin>::hooks()
                }

                fn auto_assign(
                    event: $crate::DepEvent,
                ) -> ::std::result::Result<
                    ::std::option::Option<$crate::AssignDecision>,
                    ::std::string::String,
                > {
                    <$plugin as $crate::Plugin>::auto_assign(event)
                }

                fn place(
                    device: $crate::Device,
                ) -> ::std::result::Result<
                    ::std::option::Option<$crate::PlaceDecision>,
                    ::std::string::String,
                > {
                    <$plugin as $crate::Plugin>::place(device)
                }

                fn setup_steps(
                    device: $crate::Device,
                ) -> ::std::result::Result<
                    ::std::option::Option<::std::vec::Vec<$crate::Step>>,
                    ::std::string::String,
                > {
                    <$plugin as $crate::Plugin>::setup_steps(device)
                }

                fn release(
                    device: $crate::Device,
                    progress: $crate::Progress,
                ) -> ::std::result::Result<
                    ::std::option::Option<$crate::ReleaseDecision>,
                    ::std::string::String,
                > {
                    <$plugin as $crate::Plugin>::release(device, progress)
                }
            }

    $crate::bindings::export!(PomonaExports with_types_in $crate::bindings);
        };
    };
}
