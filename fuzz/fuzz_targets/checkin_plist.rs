//! `PUT /mdm/checkin` bodies: the check-in plist decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pomona::wire::checkin::CheckinMessage;

fuzz_target!(|data: &[u8]| {
    let _ = CheckinMessage::parse(data);
});
