//! The admin API under `/v1`, authenticated with the API key (or, with
//! [`AdminAuth::External`], by the embedder in front of it).

mod auth;
mod commands;
mod dep;
mod devices;
mod enrollments;
pub mod error;
mod events;
mod plugins;
mod profiles;
mod pushcert;
mod teams;
mod views;
mod webhooks;

use axum::Router;
use axum::routing::{delete, get, post, put};

pub use auth::presented_key;

use crate::http::{AdminAuth, HttpState};

pub(crate) fn routes(state: HttpState) -> Router {
    let router = Router::new()
        .route("/v1/enqueue/{ids}", put(commands::enqueue_raw))
        .route("/v1/push/{ids}", get(commands::push).post(commands::push))
        .route("/v1/commands", post(commands::create))
        .route("/v1/commands/{uuid}", get(commands::get))
        .route("/v1/enrollments", get(enrollments::list))
        .route("/v1/enrollments/{id}", get(enrollments::get))
        .route("/v1/enrollments/{id}/queue", get(enrollments::queue))
        .route(
            "/v1/enrollments/{id}/reenroll",
            axum::routing::post(enrollments::approve_reenrollment),
        )
        .route(
            "/v1/enrollments/{id}/queue/{uuid}",
            delete(enrollments::cancel),
        )
        .route("/v1/events", get(events::list))
        .route("/v1/pushcert", get(pushcert::get).put(pushcert::put))
        .route(
            "/v1/dep/servers",
            get(dep::list_servers).post(dep::create_server),
        )
        .route(
            "/v1/dep/servers/{name}",
            get(dep::get_server).patch(dep::patch_server),
        )
        .route("/v1/dep/servers/{name}/certificate", get(dep::certificate))
        .route("/v1/dep/servers/{name}/token", put(dep::upload_token))
        .route("/v1/dep/servers/{name}/sync", post(dep::sync))
        .route("/v1/dep/servers/{name}/assign", post(dep::assign))
        .route("/v1/dep/devices", get(dep::list_devices))
        .route("/v1/dep/profiles", get(dep::list_profiles))
        .route("/v1/dep/profiles/{name}", put(dep::put_profile))
        .route("/v1/teams", get(teams::list))
        .route(
            "/v1/teams/{name}",
            get(teams::get).put(teams::put).delete(teams::delete),
        )
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/{serial}", get(devices::get))
        .route("/v1/devices/{serial}/setup", get(devices::setup))
        .route("/v1/devices/{serial}/team", put(devices::put_team))
        .route("/v1/devices/{serial}/release", post(devices::release))
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{name}",
            get(plugins::get)
                .put(plugins::put)
                .delete(plugins::delete)
                .layer(axum::extract::DefaultBodyLimit::max(
                    plugins::MAX_PLUGIN_BYTES,
                )),
        )
        .route("/v1/profiles", get(profiles::list))
        .route(
            "/v1/profiles/{name}",
            get(profiles::get)
                .put(profiles::put)
                .delete(profiles::delete)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::profiles::MAX_PROFILE_BYTES,
                )),
        )
        .route("/v1/webhooks", get(webhooks::list))
        .route(
            "/v1/webhooks/{name}",
            get(webhooks::get)
                .put(webhooks::put)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{name}/test", post(webhooks::test))
        .with_state(state.clone());
    let router = match state.options.admin_auth {
        AdminAuth::External => router,
        _ => router.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        )),
    };
    router.layer(axum::extract::DefaultBodyLimit::max(
        state.gateway.max_body_bytes(),
    ))
}
