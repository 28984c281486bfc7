//! `PUT /mdm/connect` bodies: the command-report plist decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pomona::wire::report::CommandReport;

fuzz_target!(|data: &[u8]| {
    let _ = CommandReport::parse(data);
});
