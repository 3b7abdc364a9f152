//! Destinations beyond HTTP (SPEC §15): NATS JetStream ([`nats`]),
//! RabbitMQ ([`amqp`]) and Redis Streams ([`redis`]), each the same shape:
//! an `Address` read from the subscription URL (refused at creation when it
//! lacks what the broker needs), and a destination that keeps one
//! connection in a [`Slot`], connects on first use to the addresses the
//! [`Guard`](super::destination::Guard) allows (resolve, check, connect),
//! publishes the envelope with the Standard Webhooks headers, and counts a
//! message sent only once the broker has it (JetStream's ack, a publisher
//! confirm, `XADD`'s id). Anything else is a failed attempt with the
//! broker's reason, which the dispatcher retries like any other.
//!
//! The stream, exchange and their bindings are the operator's: Clientele
//! never creates them. Credentials are handed to the client libraries
//! apart from the address, never logged, and cut out of any reason
//! ([`reason`]).

pub mod amqp;
pub mod nats;
pub mod redis;

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;

use reqwest::Url;
use tokio::sync::Mutex;

use super::destination::Refused;

/// One broker connection, kept for every message to a destination: made
/// on first use, shared by the sends in flight, and dropped after a
/// failure of the connection so that the next send connects again.
pub struct Slot<C> {
    kept: Mutex<(Option<C>, u64)>,
}

impl<C> Default for Slot<C> {
    fn default() -> Self {
        Self {
            kept: Mutex::new((None, 0)),
        }
    }
}

impl<C: Clone> Slot<C> {
    /// The kept connection, or a new one from `connect`; with its
    /// generation, for [`Slot::drop_failed`].
    pub async fn get<F, Fut>(&self, connect: F) -> Result<(C, u64), String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, String>>,
    {
        let mut kept = self.kept.lock().await;
        if let Some(connection) = &kept.0 {
            return Ok((connection.clone(), kept.1));
        }
        let connection = connect().await?;
        kept.1 += 1;
        kept.0 = Some(connection.clone());
        Ok((connection, kept.1))
    }

    /// Drops the connection of `generation` after it failed, unless another
    /// send has already replaced it. Returns it, to close.
    pub async fn drop_failed(&self, generation: u64) -> Option<C> {
        let mut kept = self.kept.lock().await;
        if kept.1 == generation { kept.0.take() } else { None }
    }
}

/// Tries each allowed address in turn; the last failure if none answers.
pub async fn connect_any<C, F, Fut>(addresses: Vec<SocketAddr>, mut connect: F) -> Result<C, String>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = Result<C, String>>,
{
    let mut failure = "cannot connect".to_owned();
    for address in addresses {
        match connect(address).await {
            Ok(connection) => return Ok(connection),
            Err(reason) => failure = reason,
        }
    }
    Err(failure)
}

/// A broker's error as an attempt's reason: its own words, with `secret`
/// (the URL's password or token) cut out should it ever appear there.
pub fn reason(what: &str, error: impl Display, secret: Option<&str>) -> String {
    let said = format!("{what}: {error}");
    match secret {
        Some(secret) if !secret.is_empty() => said.replace(secret, "***"),
        _ => said,
    }
}

/// The host of a broker URL, without brackets; refused when absent.
pub fn host(url: &Url) -> Result<String, Refused> {
    match url.host_str() {
        Some(host) if !host.is_empty() => Ok(host.trim_start_matches('[').trim_end_matches(']').to_owned()),
        _ => Err(Refused::Shape(format!("{}:// needs a host", url.scheme()))),
    }
}

/// A percent-encoded part of a URL, decoded.
pub fn decoded(part: &str, what: &str) -> Result<String, Refused> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Refused::Shape(format!("the {what} is not UTF-8")))
}

/// A password or token: shown as `***` by `Debug`, so that no log of an
/// address holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The URL's user name and password, decoded; `None` when absent.
pub fn credentials(url: &Url) -> Result<(Option<String>, Option<Secret>), Refused> {
    let user = match url.username() {
        "" => None,
        user => Some(decoded(user, "user name")?),
    };
    let password = url.password().map(|p| decoded(p, "password").map(Secret)).transpose()?;
    Ok((user, password))
}

/// Refuses query parameters other than `known`.
pub fn only_query(url: &Url, known: &[&str]) -> Result<(), Refused> {
    match url.query_pairs().find(|(key, _)| !known.contains(&key.as_ref())) {
        None => Ok(()),
        Some((key, _)) => Err(Refused::Shape(format!(
            "{}:// takes no {key:?} parameter{}",
            url.scheme(),
            match known {
                [] => String::new(),
                known => format!(" (only {})", known.join(", ")),
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_connection_is_replaced_once_not_by_every_send_that_saw_it_fail() {
        let slot = Slot::<u32>::default();
        let (first, generation) = slot.get(|| async { Ok(1) }).await.unwrap();
        assert_eq!(slot.get(|| async { Ok(2) }).await.unwrap().0, first, "reused");
        assert_eq!(slot.drop_failed(generation).await, Some(1));
        let (second, newer) = slot.get(|| async { Ok(2) }).await.unwrap();
        assert_eq!(second, 2, "connected again");
        assert_eq!(
            slot.drop_failed(generation).await,
            None,
            "a late failure of the old one"
        );
        assert_eq!(slot.get(|| async { Ok(3) }).await.unwrap(), (2, newer));
        assert!(slot.get(|| async { Err::<u32, _>("down".to_owned()) }).await.is_ok());
    }

    #[test]
    fn a_secret_never_appears_in_a_reason_nor_in_a_debug_print() {
        assert_eq!(format!("{:?}", Secret("s3cret".to_owned())), "***");
        assert_eq!(
            reason("cannot connect", "bad password s3cret for user", Some("s3cret")),
            "cannot connect: bad password *** for user"
        );
    }
}
