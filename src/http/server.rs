//! The HTTP/1.1 server under the router: accepts connections, gives each
//! request its peer address (`ConnectInfo<SocketAddr>`, which `allow_ips`
//! reads), and bounds what a client can hold: the time to send a head
//! (which is also how long a keep-alive connection may sit idle), the time
//! to send a body, the size of a head, and, on a stop, the time requests
//! in flight get before their connections are dropped.
//!
//! hyper parses the requests. Its own limits are set above Clientele's, so
//! that a head past Clientele's limits reaches [`check_head`] and is
//! answered in the JSON error shape like every other error; what hyper
//! refuses itself (a head it cannot parse, or one past its larger bounds)
//! it answers with a bare status (docs/decisions.md says which and why).
//!
//! `app::serve` runs [`serve`] over [`super::router`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use super::error::ApiError;
use crate::config::HttpSettings;

/// Header lines a request may carry: what hyper allowed by default, which
/// no platform's webhook comes near.
pub const MAX_HEADERS: usize = 100;
/// Bytes a request's header lines may take together (`name: value` and
/// its line end, the request line apart, so that any URI hyper takes
/// fits beside them).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// hyper's own bound on header lines, above [`MAX_HEADERS`] so that the
/// requests between the two are answered by [`check_head`]. hyper
/// allocates a parse table of this many entries (64 bytes each) per head.
const HYPER_MAX_HEADERS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Given by a request body in place of what was not sent in time.
    #[error("the body did not arrive within http.body_timeout")]
    BodyTimeout,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets the requests in flight finish for up to
/// `settings.stop_timeout`, and drops the connections still open.
pub async fn serve(listener: TcpListener, router: Router, settings: HttpSettings, shutdown: impl Future<Output = ()>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_headers(HYPER_MAX_HEADERS);
    let router = TowerToHyperService::new(router);
    let (stop, stopping) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(ended) = connections.join_next() => {
                if let Err(error) = ended {
                    tracing::error!(error = %error, "a connection's task failed");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after(error).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let body_timeout = settings.body_timeout;
        let service = service_fn(move |request| respond(router.clone(), peer, body_timeout, request));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let mut connection = pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop.send(());
    let drained = tokio::time::timeout(settings.stop_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight after http.stop_timeout: their connections are dropped"
        );
        connections.shutdown().await;
    }
}

/// After a failed accept: a connection the peer gave up on is nothing; a
/// lack of resources (file descriptors) is logged and waited out.
async fn pause_after(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        tracing::error!(error = %error, "cannot accept a connection; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Answers one request: refuses a head past the limits, else routes it
/// with its peer address and its body under the deadline.
async fn respond(
    router: TowerToHyperService<Router>,
    peer: SocketAddr,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    if let Err(refused) = check_head(request.headers()) {
        return Ok(refused.into_response());
    }
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    if body.is_end_stream() {
        return router.call(Request::from_parts(parts, Body::new(body))).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let body = Deadline {
        body,
        timer: Box::pin(tokio::time::sleep(body_timeout)),
        expired: expired.clone(),
    };
    let response = router.call(Request::from_parts(parts, Body::new(body))).await?;
    // Whatever a handler or an extractor made of the failed read, the
    // answer is a 408.
    Ok(if expired.load(Ordering::Relaxed) {
        ApiError::body_timeout().into_response()
    } else {
        response
    })
}

/// Refuses a head past [`MAX_HEADERS`] or [`MAX_HEADER_BYTES`].
fn check_head(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::headers_too_large(format!(
            "a request may carry {MAX_HEADERS} header lines; this one has {}",
            headers.len()
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + ": \r\n".len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(ApiError::headers_too_large(format!(
            "a request's header lines may take {MAX_HEADER_BYTES} bytes; these take {bytes}"
        )));
    }
    Ok(())
}

/// A request body that fails with [`ServerError::BodyTimeout`] once
/// `http.body_timeout` has passed since its head, whatever trickled in:
/// a client sending a byte now and then holds no ingest slot for longer.
struct Deadline {
    body: Incoming,
    timer: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(self.timer.as_mut().poll(cx));
        self.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(ServerError::BodyTimeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether reading a body failed because it did not arrive in time.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| error.is::<ServerError>())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_head_at_the_limits_passes_and_one_past_them_is_refused() {
        let mut headers = HeaderMap::new();
        for i in 0..MAX_HEADERS {
            headers.insert(
                format!("x-{i}").parse::<axum::http::HeaderName>().unwrap(),
                HeaderValue::from(i),
            );
        }
        assert!(check_head(&headers).is_ok());
        headers.insert("x-one-more", HeaderValue::from(0));
        assert_eq!(check_head(&headers).unwrap_err().code(), "headers_too_large");

        let line = |value_len: usize| {
            let mut headers = HeaderMap::new();
            let value = "v".repeat(value_len);
            headers.insert("x", HeaderValue::from_str(&value).unwrap());
            headers
        };
        let fits = MAX_HEADER_BYTES - "x: \r\n".len();
        assert!(check_head(&line(fits)).is_ok());
        assert!(check_head(&line(fits + 1)).is_err());
    }

    #[test]
    fn a_body_timeout_is_recognized_through_the_errors_wrapping_it() {
        let wrapped: Box<dyn std::error::Error + Send + Sync> =
            Box::new(axum::Error::new(Box::<dyn std::error::Error + Send + Sync>::from(
                ServerError::BodyTimeout,
            )));
        assert!(is_body_timeout(wrapped.as_ref()));
        assert!(!is_body_timeout(&std::io::Error::other("reset")));
    }
}
