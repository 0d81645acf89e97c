//! Arbitrary bodies to every JSON route of the issuer, through its real router and a real SQLite store: the answer
//! is never a 5xx and never a panic. The first byte picks the route; the rest is the body.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

const ADMIN: &str = "iat_fuzz-admin-token";

const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/v1/activate"),
    (Method::POST, "/v1/validate"),
    (Method::POST, "/v1/refresh"),
    (Method::POST, "/v1/deactivate"),
    (Method::POST, "/v1/offline/activate"),
    (Method::POST, "/v1/offline/deactivate"),
    (Method::POST, "/v1/licenses"),
    (Method::PATCH, "/v1/licenses/00000000-0000-7000-8000-000000000000"),
    (Method::POST, "/v1/policies"),
    (Method::PATCH, "/v1/policies/pro-annual"),
    (Method::POST, "/v1/webhooks"),
    (Method::POST, "/v1/admin-tokens"),
    (Method::POST, "/v1/ip-rules"),
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let flags = issuer::Flags::new(None, Some(dir.path().join("data")), None);
        let mut config = issuer::Config::load(None, |_| None, flags).unwrap();
        config.rate_limit_per_second = 0;
        config.admin_token = Some(issuer::Secret::new(ADMIN));
        let started = runtime.block_on(issuer::start(&config)).unwrap();
        Fixture { router: issuer::http::app(started.state), runtime, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let (method, path) = &ROUTES[usize::from(pick) % ROUTES.len()];
    let fixture = fixture();
    let request = Request::builder()
        .method(method.clone())
        .uri(*path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::from(body.to_vec()))
        .unwrap();
    let response = fixture.runtime.block_on(fixture.router.clone().oneshot(request)).unwrap();
    assert!(!response.status().is_server_error(), "{method} {path} answered {} to {body:?}", response.status());
});
