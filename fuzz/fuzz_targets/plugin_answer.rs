//! Plugin answers (the Lua-shape JSON every hook's validator reads) and fixture inputs
//! (`pomona plugin test`). A valid answer must survive `to_json` and validate to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pomona::policy::{Decision, Hook, HookInput, steps_from_json};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for hook in Hook::ALL {
        if let Ok(Some(decision)) = Decision::from_json(hook, &value) {
            let again = Decision::from_json(hook, &decision.to_json());
            assert_eq!(
                again,
                Ok(Some(decision)),
                "{hook:?} answer does not round-trip"
            );
        }
        let _ = HookInput::from_fixture(hook, value.clone());
    }
    let _ = steps_from_json(&value);
});
