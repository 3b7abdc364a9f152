//! The HTTP ceiling for the ingest benchmark: the same stack as Clientele
//! (tokio, axum, hyper) answering `POST /webhooks/{source}` after parsing
//! the JSON body, and nothing else. `bench/run.sh` reports Clientele's
//! durable ingest rate as a ratio of this one's, measured in the same run.
//! It is also the no-op subscriber of the delivery benchmark (`POST /hook`).
//!
//! `cargo run --release --example noop -- 127.0.0.1:8091`

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8091".into());
    let parse_and_answer = |body: Bytes| async move {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(_) => (StatusCode::OK, r#"{"status":"accepted"}"#),
            Err(_) => (StatusCode::BAD_REQUEST, r#"{"error":{"code":"invalid_json"}}"#),
        }
    };
    let app = Router::new()
        .route("/webhooks/{source}", post(parse_and_answer))
        .route("/hook", post(parse_and_answer));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await
}
