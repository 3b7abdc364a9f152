//! Sending one message: the HTTP client, a signed `POST` of the envelope,
//! and the attempt recorded with what follows from it ([`super::policy`]).
//!
//! The client calls only allowed destinations ([`super::destination`]):
//! its resolver drops non-public addresses, and an IP-literal host is
//! checked here before connecting. It follows no redirect, uses no proxy
//! (a proxy would connect in its stead, past the check), and speaks
//! HTTP/1.1 or HTTP/2 (offered over TLS by ALPN). An attempt's error names
//! what failed, never the URL (it may hold a token), and a refused
//! destination tells nothing of what listens there.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use reqwest::Url;

use super::destination::{Guard, GuardedResolver, Refused};
use super::policy::{self, Answer};
use super::{Attempt, Due, Next, Outbox, signing};
use crate::config::DeliverySettings;
use crate::model::UtcMillis;

pub struct Sender {
    client: reqwest::Client,
    guard: Guard,
    outbox: Arc<dyn Outbox>,
    settings: DeliverySettings,
}

impl Sender {
    pub fn new(outbox: Arc<dyn Outbox>, settings: DeliverySettings) -> Result<Self, reqwest::Error> {
        // The TLS crypto provider reqwest's rustls uses; installed once per
        // process (a second install is refused, harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let guard = Guard::new(&settings.allow_private);
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver::new(guard.clone()))
            .user_agent(concat!("Clientele/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            guard,
            outbox,
            settings,
        })
    }

    /// Sends one message and records the attempt; returns what followed.
    pub async fn attempt(&self, message: Due) -> Next {
        let at = UtcMillis::now();
        let started = Instant::now();
        let response = self.send(&message, at).await;
        let elapsed = started.elapsed();
        let (answer, status_code, error) = match response {
            Ok(response) => {
                let status = response.status();
                let answer = if status.is_success() {
                    Answer::Success
                } else if status == StatusCode::GONE {
                    Answer::Gone
                } else {
                    let asked = [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE]
                        .contains(&status)
                        .then(|| response.headers().get("retry-after")?.to_str().ok())
                        .flatten()
                        .and_then(|v| policy::retry_after(v, UtcMillis::now()));
                    Answer::Failed { retry_after: asked }
                };
                (answer, Some(status.as_u16()), None)
            }
            Err(error) => (Answer::Failed { retry_after: None }, None, Some(error)),
        };
        let next = policy::next(
            answer,
            message.failures,
            &self.settings.retry_schedule,
            UtcMillis::now(),
            jitter(),
        );
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::Retry { .. } => "retried",
            Next::Dead { .. } => "dead",
        };
        metrics::counter!("clientele_messages_total", "outcome" => outcome).increment(1);
        metrics::histogram!("clientele_delivery_attempt_seconds").record(elapsed.as_secs_f64());
        match next {
            Next::Dead {
                disable_subscription: true,
            } => tracing::warn!(
                subscription = %message.subscription_id,
                "the subscriber answered 410 Gone: subscription disabled"
            ),
            Next::Dead { .. } => tracing::warn!(
                subscription = %message.subscription_id,
                message = message.seq,
                "a message is dead after its last retry"
            ),
            _ => tracing::debug!(
                subscription = %message.subscription_id,
                message = message.seq,
                status = status_code,
                outcome,
                "message attempt"
            ),
        }
        let attempt = Attempt {
            at,
            status_code,
            error,
            duration_ms: elapsed.as_millis() as u64,
        };
        if let Err(e) = self.outbox.record_attempt(&message, attempt, next).await {
            // The lease ends and the message is sent again: at least once.
            tracing::error!(error = %e, message = message.seq, "cannot record a message attempt");
        }
        next
    }

    /// Posts the envelope, signed; the error says what failed.
    async fn send(&self, message: &Due, at: UtcMillis) -> Result<reqwest::Response, String> {
        let url = Url::parse(&message.url).map_err(|_| "the URL is not valid".to_owned())?;
        // The resolver is not asked for an IP-literal host.
        self.guard.check_host(&url).map_err(|refused| refused.to_string())?;
        let timestamp = at.as_timestamp().as_second();
        let key = signing::key(&message.secret).unwrap_or_else(|| message.secret.as_bytes().to_vec());
        self.client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signing::sign(&key, &message.event_id, timestamp, &message.body),
            )
            .body(message.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e, self.settings.timeout))
    }
}

/// What a failed request's error was, in words that name neither the URL
/// nor anything of a refused destination.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if causes(e).any(|cause| cause.downcast_ref::<Refused>().is_some()) {
        return Refused::NotAllowed.to_string();
    }
    if let Some(tls) = causes(e).find_map(|cause| cause.downcast_ref::<rustls::Error>()) {
        return format!("TLS handshake failed: {}", tls_problem(tls));
    }
    if e.is_timeout() {
        format!("timed out after {timeout:?}")
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

/// `e` and its causes, looking inside I/O errors too (their `source`
/// skips the error they wrap, where TLS puts its own).
fn causes<'e>(e: &'e (dyn Error + 'static)) -> impl Iterator<Item = &'e (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| {
        match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        }
    })
}

fn tls_problem(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as Cert;
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => "certificate not trusted",
            Cert::Expired | Cert::ExpiredContext { .. } => "certificate expired",
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => "certificate not valid yet",
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => "certificate not valid for the host",
            Cert::Revoked => "certificate revoked",
            _ => "certificate invalid",
        },
        rustls::Error::AlertReceived(_) => "the server refused the handshake",
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server does not speak TLS"
        }
        rustls::Error::NoApplicationProtocol => "no protocol in common",
        _ => "protocol error",
    }
}

/// A number in `[0, 1)` for retry jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}
