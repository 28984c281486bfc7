//! Embedding Pomona in an existing axum application that has its own authentication.
//!
//! The app keeps its own routes and its own login (here a bearer token of the app's, not
//! Pomona's API key). Pomona's device endpoints and admin API are mounted under `/mdm-engine`:
//! devices reach `/mdm-engine/mdm/...`, `/mdm-engine/scep` and `/mdm-engine/mdm/enroll` without
//! the app's login (they prove themselves with their certificates), while the admin API at
//! `/mdm-engine/v1/...` sits behind the app's authentication middleware. The engine's public URL
//! includes the prefix, so enrollment profiles point devices at the prefixed paths.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pomona::{AdminAuth, Engine, HttpOptions, Routes};

/// Where the engine is mounted in the app.
pub const PREFIX: &str = "/mdm-engine";

/// The app's own credential check: a bearer token of the app (a session, an SSO token, ...).
async fn require_app_token(State(token): State<String>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(token.as_str()) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "log in to the app first").into_response()
    }
}

/// The app: its own page, and the engine's device and admin routers under [`PREFIX`], the
/// admin API behind the app's authentication (`app_token`).
pub fn app(engine: &Engine, app_token: &str) -> Router {
    // The app authenticates admin callers itself, so Pomona's API-key check is turned off
    // explicitly (the default would refuse every admin request).
    let routes = Routes::new(engine, HttpOptions::new().admin_auth(AdminAuth::External));
    let admin = routes
        .admin_router()
        .route_layer(axum::middleware::from_fn_with_state(
            app_token.to_owned(),
            require_app_token,
        ));
    Router::new()
        .route(
            "/",
            get(|| async { "my product, with an MDM engine inside" }),
        )
        .nest(PREFIX, routes.device_router().merge(admin))
}
