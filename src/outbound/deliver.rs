//! One trait for every kind of destination (SPEC §6, §15): a
//! [`Destination`] delivers one signed envelope and says how it went, as an
//! [`Outcome`]; what follows (retries, dead messages, order) is the
//! dispatcher's and the policy's, the same for every kind.
//!
//! The kinds: [`super::http`] (a signed `POST`) and the brokers in
//! [`super::brokers`] (NATS JetStream, RabbitMQ, Redis Streams), each the
//! same shape. [`Destinations`] keeps one destination per URL, made on
//! first use, so that a broker's connection is reused by every message to
//! it (and made again after a failure), and forgets those unused for
//! [`IDLE`] (a deleted subscription's, say).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;

use super::brokers::{amqp::Amqp, nats::Nats, redis::Redis};
use super::destination::{Guard, Target};
use super::http::Http;
use super::policy::Answer;
use super::{Due, signing};
use crate::BoxFuture;
use crate::config::DeliverySettings;
use crate::model::UtcMillis;

/// How long a destination nobody sends to is kept, with its connection.
pub const IDLE: Duration = Duration::from_secs(600);

/// A message ready to go: the envelope, its Standard Webhooks headers, and
/// what brokers route it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `webhook-id`: the envelope id, the same on every retry.
    pub id: String,
    /// `webhook-timestamp`, Unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: String,
    /// The envelope, JSON.
    pub body: String,
    /// The envelope's `type` and `action`: a broker's subject or routing
    /// key ends with `{type}.{action}`.
    pub kind: String,
    pub action: String,
}

#[derive(Deserialize)]
struct Route {
    #[serde(rename = "type")]
    kind: String,
    action: String,
}

impl Signed {
    /// Signs `message` at `at` with its subscription's secret.
    pub fn new(message: &Due, at: UtcMillis) -> Result<Self, String> {
        let route: Route = serde_json::from_str(&message.body)
            .map_err(|_| "the envelope has no type or action to route by".to_owned())?;
        let timestamp = at.as_timestamp().as_second();
        let key = signing::key(&message.secret).unwrap_or_else(|| message.secret.as_bytes().to_vec());
        Ok(Self {
            signature: signing::sign(&key, &message.event_id, timestamp, &message.body),
            id: message.event_id.clone(),
            timestamp,
            body: message.body.clone(),
            kind: route.kind,
            action: route.action,
        })
    }

    /// `{type}.{action}`: RabbitMQ's routing key, the end of a NATS subject.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.kind, self.action)
    }
}

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub answer: Answer,
    /// The HTTP status, for HTTP destinations.
    pub status_code: Option<u16>,
    /// What failed, in words that name neither the URL nor its credentials:
    /// for a broker, its own reason.
    pub error: Option<String>,
}

impl Outcome {
    /// A broker's publish: delivered once acknowledged, else failed with
    /// the broker's reason.
    pub fn of(published: Result<(), String>) -> Self {
        match published {
            Ok(()) => Self {
                answer: Answer::Success,
                status_code: None,
                error: None,
            },
            Err(reason) => Self::failed(reason),
        }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            answer: Answer::Failed { retry_after: None },
            status_code: None,
            error: Some(reason.into()),
        }
    }
}

/// Somewhere messages go. Never panics on what the other end does: every
/// failure is an [`Outcome`] with its reason.
pub trait Destination: Send + Sync {
    /// Delivers one signed envelope.
    fn deliver<'a>(&'a self, message: &'a Signed) -> BoxFuture<'a, Outcome>;
}

/// The destinations in use, one per URL, each keeping its connection.
pub struct Destinations {
    client: reqwest::Client,
    guard: Guard,
    timeout: Duration,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_url: HashMap<String, (Arc<dyn Destination>, Instant)>,
    swept: Option<Instant>,
}

impl Destinations {
    pub fn new(settings: &DeliverySettings) -> Result<Self, reqwest::Error> {
        let guard = Guard::new(&settings.allow_private);
        Ok(Self {
            client: super::http::client(&guard, settings.timeout)?,
            guard,
            timeout: settings.timeout,
            kept: Mutex::default(),
        })
    }

    /// The destination of `url`, kept from an earlier message or made now
    /// (without connecting: that is the first delivery's to do).
    pub fn get(&self, url: &str) -> Result<Arc<dyn Destination>, String> {
        let now = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.swept.is_none_or(|at| now.duration_since(at) > IDLE / 10) {
            kept.by_url.retain(|_, (_, used)| now.duration_since(*used) <= IDLE);
            kept.swept = Some(now);
        }
        if let Some((destination, used)) = kept.by_url.get_mut(url) {
            *used = now;
            return Ok(destination.clone());
        }
        let parsed = Url::parse(url).map_err(|_| "the URL is not valid".to_owned())?;
        let target = Target::parse(&parsed).map_err(|refused| refused.to_string())?;
        let (guard, timeout) = (self.guard.clone(), self.timeout);
        let destination: Arc<dyn Destination> = match target {
            Target::Http(url) => Arc::new(Http::new(self.client.clone(), guard, url, timeout)),
            Target::Nats(address) => Arc::new(Nats::new(address, guard, timeout)),
            Target::Amqp(address) => Arc::new(Amqp::new(address, guard, timeout)),
            Target::Redis(address) => Arc::new(Redis::new(address, guard, timeout)),
        };
        kept.by_url.insert(url.to_owned(), (destination.clone(), now));
        Ok(destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(body: &str) -> Due {
        Due {
            seq: 1,
            subscription_id: "sub_1".into(),
            url: "http://example.com/".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            event_id: "evt_1".into(),
            body: body.into(),
            created_at: UtcMillis::now(),
            failures: 0,
            generation: 0,
            claim: 0,
        }
    }

    #[test]
    fn a_signed_message_routes_by_the_envelope_s_type_and_action() {
        let at: UtcMillis = "2026-04-24T00:00:00Z".parse().unwrap();
        let body = r#"{"id":"evt_1","type":"customer","action":"merged","payload":{}}"#;
        let signed = Signed::new(&due(body), at).unwrap();
        assert_eq!(signed.routing_key(), "customer.merged");
        assert_eq!(signed.timestamp, at.as_timestamp().as_second());
        let key = signing::key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(signed.signature, signing::sign(&key, "evt_1", signed.timestamp, body));
        assert!(Signed::new(&due("{}"), at).is_err(), "no route, no panic");
    }

    #[test]
    fn a_broker_s_publish_is_delivered_only_when_it_succeeded() {
        let delivered = Outcome::of(Ok(()));
        assert_eq!((delivered.answer, delivered.error), (Answer::Success, None));
        let refused = Outcome::of(Err("no queue is bound".to_owned()));
        assert_eq!(refused.answer, Answer::Failed { retry_after: None });
        assert_eq!(refused.error.as_deref(), Some("no queue is bound"));
        assert_eq!(refused.status_code, None, "a broker has no HTTP status");
    }

    #[test]
    fn one_destination_is_kept_per_url() {
        let destinations = Destinations::new(&DeliverySettings::default()).unwrap();
        let a = destinations.get("redis://r.example.com/s").unwrap();
        let b = destinations.get("redis://r.example.com/s").unwrap();
        let c = destinations.get("redis://r.example.com/t").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(destinations.get("gopher://example.com/").is_err());
    }
}
