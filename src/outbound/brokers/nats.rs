//! NATS JetStream (`nats://[user:pass@|token@]host[:4222]/PREFIX`): each
//! message is published to `PREFIX.{type}.{action}` with `Nats-Msg-Id` set
//! to the envelope id (JetStream drops a duplicate within the stream's
//! window, so a retry after a lost ack stores nothing twice) and the
//! Standard Webhooks headers; it is sent once the stream acknowledges it.
//! A subject no stream captures fails with the broker's "no stream found".
//!
//! The client (async-nats) is kept per destination and reconnects by
//! itself; while it is disconnected an attempt fails at once instead of
//! queueing. It connects to the allowed address it was given and ignores
//! the servers a cluster announces (they were not checked).

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use async_nats::{ConnectOptions, HeaderMap, connection::State};
use reqwest::Url;

use super::{Secret, Slot, connect_any, credentials, host, only_query, reason};
use crate::BoxFuture;
use crate::outbound::deliver::{Destination, Outcome, Signed};
use crate::outbound::destination::{Guard, Refused};

const DEFAULT_PORT: u16 = 4222;

/// Where and how to publish, read from the subscription URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    host: String,
    port: u16,
    /// The subject prefix: `PREFIX.{type}.{action}`.
    prefix: String,
    /// With a password: user and password; alone: a token.
    user: Option<Secret>,
    password: Option<Secret>,
}

impl Address {
    pub fn parse(url: &Url) -> Result<Self, Refused> {
        only_query(url, &[])?;
        let prefix = url.path().trim_start_matches('/').to_owned();
        let valid_token = |t: &str| !t.is_empty() && !t.contains(['*', '>', '%']) && !t.contains(char::is_whitespace);
        if !prefix.split('.').all(valid_token) {
            return Err(Refused::Shape(
                "nats:// needs a subject prefix as its path (nats://host:4222/PREFIX): dot-separated tokens, no wildcards"
                    .to_owned(),
            ));
        }
        let (user, password) = credentials(url)?;
        Ok(Self {
            host: host(url)?,
            port: url.port().unwrap_or(DEFAULT_PORT),
            prefix,
            user: user.map(Secret),
            password,
        })
    }

    /// The password, or the token (a lone user name).
    fn secret(&self) -> Option<&str> {
        self.password.as_ref().or(self.user.as_ref()).map(Secret::expose)
    }
}

pub struct Nats {
    address: Address,
    guard: Guard,
    timeout: Duration,
    client: Slot<(async_nats::Client, jetstream::Context)>,
}

impl Nats {
    pub fn new(address: Address, guard: Guard, timeout: Duration) -> Self {
        Self {
            address,
            guard,
            timeout,
            client: Slot::default(),
        }
    }

    async fn connect(&self) -> Result<(async_nats::Client, jetstream::Context), String> {
        let addresses = self.guard.resolve(&self.address.host, self.address.port).await?;
        let client = connect_any(addresses, |address| {
            let mut options = ConnectOptions::new()
                .name("clientele")
                .ignore_discovered_servers()
                .connection_timeout(self.timeout)
                .request_timeout(Some(self.timeout));
            options = match (&self.address.user, &self.address.password) {
                (Some(user), Some(password)) => {
                    options.user_and_password(user.expose().to_owned(), password.expose().to_owned())
                }
                (Some(token), None) => options.token(token.expose().to_owned()),
                _ => options,
            };
            async move {
                options
                    .connect(format!("nats://{address}"))
                    .await
                    .map_err(|e| reason("cannot connect", e, self.address.secret()))
            }
        })
        .await?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(self.timeout);
        Ok((client, context))
    }

    async fn publish(&self, message: &Signed) -> Result<(), String> {
        let ((client, context), in_use) = self.client.get(|| self.connect()).await?;
        if client.connection_state() != State::Connected {
            // The client reconnects by itself; a publish now would wait in
            // its buffer past the attempt.
            in_use.keep();
            return Err("not connected to the NATS server (reconnecting)".to_owned());
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message.id.as_str());
        headers.insert("content-type", "application/json");
        headers.insert("webhook-id", message.id.as_str());
        headers.insert("webhook-timestamp", message.timestamp.to_string().as_str());
        headers.insert("webhook-signature", message.signature.as_str());
        let subject = format!("{}.{}", self.address.prefix, message.routing_key());
        let publish = PublishMessage::build()
            .payload(message.body.clone().into())
            .headers(headers);
        let secret = self.address.secret();
        // The client survives any of these failures (it reconnects by
        // itself); only a cancelled send drops it.
        let sent = async {
            let ack = context
                .send_publish(subject, publish)
                .await
                .map_err(|e| reason("cannot publish", e, secret))?;
            match ack.await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                    Err("no JetStream stream captures the subject (no stream found for given subject)".to_owned())
                }
                Err(e) => Err(reason("JetStream did not acknowledge the message", e, secret)),
            }
        }
        .await;
        in_use.keep();
        sent
    }
}

impl Destination for Nats {
    fn deliver<'a>(&'a self, message: &'a Signed) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { Outcome::of(self.publish(message).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Address, Refused> {
        Address::parse(&Url::parse(url).unwrap())
    }

    #[test]
    fn a_nats_url_gives_the_host_the_prefix_and_the_credentials() {
        let address = parse("nats://u:p%40ss@nats.example.com/clientele.prod").unwrap();
        assert_eq!(address.host, "nats.example.com");
        assert_eq!(address.port, 4222);
        assert_eq!(address.prefix, "clientele.prod");
        assert_eq!(address.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert!(!format!("{address:?}").contains("p@ss"));
        let token = parse("nats://t0ken@[::1]:4333/x").unwrap();
        assert_eq!((token.host.as_str(), token.port), ("::1", 4333));
        assert_eq!(token.secret(), Some("t0ken"));
        for bad in [
            "nats://h/",
            "nats://h/a.",
            "nats://h/a.*",
            "nats://h/a%20b",
            "nats://h/p?x=1",
        ] {
            assert!(matches!(parse(bad), Err(Refused::Shape(_))), "{bad}");
        }
    }
}
