//! Chainable `with_*` setters for option structs.
//!
//! Option structs are `#[non_exhaustive]` so that a new field is not a breaking change; code
//! outside the crate therefore cannot build them with a struct literal. It starts from
//! `Default::default()` (or the struct's `new`) and either assigns the public fields or chains
//! the setters this macro generates:
//!
//! ```
//! use std::time::Duration;
//! use pomona::setup::SetupOptions;
//!
//! let options = SetupOptions::default().with_release_timeout(Duration::from_secs(60));
//! assert_eq!(options.release_timeout, Duration::from_secs(60));
//! ```

/// `with_setters!(Type { with_field => field: FieldType, ... })` implements, for each listed
/// field, `pub fn with_field(self, value: FieldType) -> Self` that sets it.
macro_rules! with_setters {
    ($ty:ident { $($setter:ident => $field:ident: $fty:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Set [`", stringify!($field), "`](", stringify!($ty), "::",
                    stringify!($field), ").")]
                #[must_use]
                pub fn $setter(mut self, value: $fty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

pub(crate) use with_setters;
