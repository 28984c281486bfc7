//! `.mobileconfig` uploads (`PUT /v1/profiles/...`): signed or plain, XML or binary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pomona::wire::config_profile::validate;

fuzz_target!(|data: &[u8]| {
    let _ = validate(data);
});
