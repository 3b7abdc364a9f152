//! The HTTP destination (SPEC §6): a signed `POST` of the envelope, the
//! Standard Webhooks headers as HTTP headers. A 2xx is success, `410 Gone`
//! ends the subscription, `Retry-After` on 429/503 is read.
//!
//! The client calls only allowed destinations ([`super::destination`]):
//! its resolver drops non-public addresses, and an IP-literal host is
//! checked here before connecting. It follows no redirect, uses no proxy
//! (a proxy would connect in its stead, past the check), and speaks
//! HTTP/1.1 or HTTP/2 (offered over TLS by ALPN). One client serves every
//! HTTP destination, and keeps their connections. An attempt's error names
//! what failed, never the URL (it may hold a token), and a refused
//! destination tells nothing of what listens there.

use std::error::Error;
use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Url;

use super::deliver::{Destination, Outcome, Signed};
use super::destination::{Guard, GuardedResolver, Refused};
use super::policy::{self, Answer};
use crate::BoxFuture;
use crate::model::UtcMillis;

/// The client every HTTP destination shares.
pub fn client(guard: &Guard, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // The TLS crypto provider reqwest's rustls uses; installed once per
    // process (a second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver::new(guard.clone()))
        .user_agent(concat!("Clientele/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub struct Http {
    client: reqwest::Client,
    guard: Guard,
    url: Url,
    timeout: Duration,
}

impl Http {
    pub fn new(client: reqwest::Client, guard: Guard, url: Url, timeout: Duration) -> Self {
        Self {
            client,
            guard,
            url,
            timeout,
        }
    }

    /// Posts the envelope, signed; the error says what failed.
    async fn post(&self, message: &Signed) -> Result<reqwest::Response, String> {
        // The resolver is not asked for an IP-literal host.
        self.guard
            .check_host(&self.url)
            .map_err(|refused| refused.to_string())?;
        self.client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", message.timestamp.to_string())
            .header("webhook-signature", &message.signature)
            .body(message.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e, self.timeout))
    }
}

impl Destination for Http {
    fn deliver<'a>(&'a self, message: &'a Signed) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let response = match self.post(message).await {
                Ok(response) => response,
                Err(reason) => return Outcome::failed(reason),
            };
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
            Outcome {
                answer,
                status_code: Some(status.as_u16()),
                error: None,
            }
        })
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
