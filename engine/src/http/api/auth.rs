//! API-key authentication: `Authorization: Bearer KEY`, or HTTP Basic with any user name and the
//! key as password (so tools written for NanoMDM work unchanged).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::error::ApiError;
use crate::http::{AdminAuth, HttpState};

/// The key presented in an `Authorization` header, if any.
pub fn presented_key(authorization: &str) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(B64.decode(rest).ok()?).ok()?;
        let (_, password) = decoded.split_once(':')?;
        return Some(password.to_owned());
    }
    None
}

fn keys_match(expected: &str, presented: &str) -> bool {
    let (a, b) = (
        openssl::sha::sha256(expected.as_bytes()),
        openssl::sha::sha256(presented.as_bytes()),
    );
    openssl::memcmp::eq(&a, &b)
}

/// Middleware rejecting requests without the configured key ([`AdminAuth::ApiKey`]); with
/// [`AdminAuth::Locked`] it rejects everything. Not installed for [`AdminAuth::External`].
pub(crate) async fn require_api_key(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = match &state.options.admin_auth {
        AdminAuth::ApiKey(key) => Some(key),
        _ => None,
    };
    let authorized = match (expected, request.headers().get("authorization")) {
        (Some(expected), Some(value)) => value
            .to_str()
            .ok()
            .and_then(presented_key)
            .is_some_and(|k| keys_match(expected, &k)),
        _ => false,
    };
    if authorized {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic() {
        assert_eq!(presented_key("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(presented_key("bearer  abc ").as_deref(), Some("abc"));
        let basic = format!("Basic {}", B64.encode("nanomdm:sekret:with:colons"));
        assert_eq!(presented_key(&basic).as_deref(), Some("sekret:with:colons"));
        assert_eq!(presented_key("Basic !!!"), None);
        assert_eq!(presented_key("Digest x"), None);
        assert_eq!(presented_key("abc"), None);
        assert!(keys_match("k", "k"));
        assert!(!keys_match("k", "K"));
    }
}
