//! Bad input on the signaling socket and the token API: every case gets a clear error with a
//! stable code on the same socket, and the node keeps serving the others.
//!
//! Runs the `huiyan demo` pilot; needs the `huiyan` binary (`cargo build -p huiyan`).

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::{ROOM, SCENIC_1, base_port, start_demo};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn token(web: u16, room: &str, ttl: u64) -> Result<reqwest::Response> {
    Ok(reqwest::Client::new()
        .post(format!("http://127.0.0.1:{web}/api/v1/media/token"))
        .json(&json!({ "room": room, "sub": "tester", "role": "speaker", "ttl_seconds": ttl }))
        .send()
        .await?)
}

async fn valid_token(web: u16, ttl: u64) -> Result<String> {
    let body: Value = token(web, ROOM, ttl)
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["token"].as_str().context("no token")?.to_owned())
}

/// Send a frame and return the next message the node sends back.
async fn ask(ws: &mut Socket, frame: Message) -> Result<Value> {
    ws.send(frame).await?;
    next(ws).await
}

async fn next(ws: &mut Socket) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no answer within 10 s")?
            .context("socket closed")??;
        if let Message::Text(text) = msg {
            let value: Value = serde_json::from_str(&text)?;
            // The node's keepalives may come between a request and its answer.
            if value["type"] != "keepalive" {
                return Ok(value);
            }
        }
    }
}

fn expect_error(reply: &Value, code: &str) {
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| m.len() > 10),
        "error without an explanation: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signaling_gets_clear_errors_and_the_node_keeps_serving() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let base = base_port();
    let _demo = start_demo(dir.path(), base)?;
    let web = base + 10 * SCENIC_1;

    // Token API: an unknown room is named in the refusal.
    let refused = token(web, "no-such-room", 60).await?;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await?;
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("no-such-room"),
        "{body}"
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{web}/ws")).await?;

    // Garbage, binary and oversized frames, and requests out of order.
    expect_error(&ask(&mut ws, Message::text("hello")).await?, "bad_message");
    expect_error(
        &ask(&mut ws, Message::text(r#"{"type":"fly"}"#)).await?,
        "bad_message",
    );
    expect_error(
        &ask(&mut ws, Message::binary(vec![0u8; 64])).await?,
        "bad_message",
    );
    let big = json!({ "type": "join", "token": "x".repeat(100_000) }).to_string();
    expect_error(&ask(&mut ws, Message::text(big)).await?, "too_large");
    let early = json!({ "type": "publish", "sdp": "v=0" }).to_string();
    expect_error(&ask(&mut ws, Message::text(early)).await?, "not_joined");

    // Forged and expired tokens.
    let good = valid_token(web, 600).await?;
    let (body, _sig) = good.split_once('.').context("token form")?;
    let forged = format!("{body}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let join = |token: &str| Message::text(json!({ "type": "join", "token": token }).to_string());
    expect_error(&ask(&mut ws, join(&forged)).await?, "bad_token");
    expect_error(&ask(&mut ws, join("not-a-token")).await?, "bad_token");
    let short = valid_token(web, 1).await?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect_error(&ask(&mut ws, join(&short)).await?, "token_expired");

    // A valid join, then a malformed SDP.
    let joined = ask(&mut ws, join(&good)).await?;
    assert_eq!(joined["type"], "joined", "{joined}");
    let bad_sdp = json!({ "type": "publish", "sdp": "v=0\r\nthis is not sdp" }).to_string();
    expect_error(&ask(&mut ws, Message::text(bad_sdp)).await?, "bad_sdp");

    // A flood of joins on one socket: refused, then rate limited.
    let mut codes = Vec::new();
    for _ in 0..25 {
        codes.push(
            ask(&mut ws, join(&good)).await?["code"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert!(
        codes
            .iter()
            .all(|c| c == "already_joined" || c == "rate_limited"),
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");

    // The node still serves: another socket joins, and the node reports ready.
    let (mut other, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{web}/ws")).await?;
    let joined = ask(&mut other, join(&valid_token(web, 600).await?)).await?;
    assert_eq!(joined["type"], "joined", "{joined}");
    let ready = reqwest::get(format!("http://127.0.0.1:{web}/readyz")).await?;
    if !ready.status().is_success() {
        bail!("node not ready after bad input: {}", ready.text().await?);
    }
    Ok(())
}
