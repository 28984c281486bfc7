//! The example app serves Pomona's device endpoints under its prefix to anyone, and the admin
//! API only to callers that pass the app's own authentication.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use pomona::Engine;
use pomona_example_embed_axum::{PREFIX, app};
use tower::ServiceExt as _;

const TOKEN: &str = "app-token-for-the-test";

async fn engine() -> Engine {
    Engine::builder()
        .public_url(format!("https://example.test{PREFIX}"))
        .build()
        .await
        .unwrap()
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, body.to_vec())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn device_routes_are_reachable_under_the_prefix() {
    let engine = engine().await;
    let app = app(&engine, TOKEN);

    let (status, body) = call(&app, get(&format!("{PREFIX}/scep?operation=GetCACaps"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("POSTPKIOperation"));

    // The enrollment profile points devices at the prefixed endpoints.
    let (status, body) = call(&app, get(&format!("{PREFIX}/mdm/enroll"))).await;
    assert_eq!(status, StatusCode::OK);
    let profile = String::from_utf8_lossy(&body);
    assert!(
        profile.contains("https://example.test/mdm-engine/mdm/checkin"),
        "{profile}"
    );
    assert!(profile.contains("https://example.test/mdm-engine/scep"));

    // A check-in without an identity reaches the engine, which refuses it as a device error,
    // not as a missing route or a missing login.
    let req = Request::put(format!("{PREFIX}/mdm/checkin"))
        .body(Body::from("<plist/>"))
        .unwrap();
    let (status, _) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Nothing is served outside the prefix.
    let (status, _) = call(&app, get("/scep?operation=GetCACaps")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    engine.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_apps_own_authentication() {
    let engine = engine().await;
    let app = app(&engine, TOKEN);
    let path = format!("{PREFIX}/v1/enrollments");

    let (status, _) = call(&app, get(&path)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no credentials");

    let wrong = Request::get(&path)
        .header("authorization", "Bearer not-the-token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, wrong).await.0, StatusCode::UNAUTHORIZED);

    let ok = Request::get(&path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, ok).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["enrollments"], serde_json::json!([]));

    // The app's own page is untouched.
    assert_eq!(call(&app, get("/")).await.0, StatusCode::OK);
    engine.shutdown().await;
}
