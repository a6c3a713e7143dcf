//! HTTP fakes of third-party services (forges' status APIs, chat webhooks) on wiremock: they
//! answer every POST and record what they got.

use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A small runtime for the fakes (the tests themselves are synchronous).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A fake answering every POST with `status` and the JSON `reply`.
pub fn fake(rt: &tokio::runtime::Runtime, status: u16, reply: Value) -> MockServer {
    rt.block_on(async {
        let s = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(reply))
            .mount(&s)
            .await;
        s
    })
}

/// What the fake received, in order.
pub fn requests(rt: &tokio::runtime::Runtime, s: &MockServer) -> Vec<Request> {
    rt.block_on(s.received_requests()).unwrap_or_default()
}

/// The JSON bodies the fake received, in order.
pub fn bodies(rt: &tokio::runtime::Runtime, s: &MockServer) -> Vec<Value> {
    requests(rt, s).iter().map(body).collect()
}

pub fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

pub fn header(r: &Request, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}
