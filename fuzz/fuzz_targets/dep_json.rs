//! Apple's DEP API answers: every JSON type Pomona reads from it, the error-code matcher and the
//! OAuth header parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pomona::wire::dep::{
    self, Account, AssignResponse, DefineProfileResponse, Device, DevicePage, OAuthToken, Profile,
};

fuzz_target!(|data: &[u8]| {
    let _ = dep::parse::<DevicePage>(data, "device page");
    let _ = dep::parse::<Device>(data, "device");
    let _ = dep::parse::<Account>(data, "account");
    let _ = dep::parse::<Profile>(data, "profile");
    let _ = dep::parse::<DefineProfileResponse>(data, "define profile");
    let _ = dep::parse::<AssignResponse>(data, "assign");
    let _ = dep::parse::<OAuthToken>(data, "token");
    let _ = dep::error_is(data, "EXPIRED_CURSOR");
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = dep::parse_oauth_header(header);
    }
});
