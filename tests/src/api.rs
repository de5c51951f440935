//! JSON calls to a node's API as the web apps make them: a method, a path, an optional bearer
//! token and body; the answer as (status, JSON).

use std::net::SocketAddr;

use serde_json::Value;

use crate::client;

/// Sends one request. No answer within the client's timeout is status 0, so that a poll tries
/// again (a loaded machine can stall a node's disk flush for seconds) and an assertion shows
/// the error.
pub fn send(
    method: reqwest::Method,
    web: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, format!("http://{web}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().unwrap_or(Value::Null))
        }
        Err(e) => (0, serde_json::json!({ "no_answer": e.to_string() })),
    }
}

pub fn get(web: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    send(reqwest::Method::GET, web, path, token, None)
}

pub fn post(web: SocketAddr, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    send(reqwest::Method::POST, web, path, token, Some(body))
}

pub fn delete(web: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    send(reqwest::Method::DELETE, web, path, token, None)
}
