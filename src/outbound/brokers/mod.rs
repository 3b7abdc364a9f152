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
use std::sync::Arc;

use reqwest::Url;
use tokio::sync::Mutex;

use super::destination::Refused;

/// One broker connection, kept for every message to a destination: made
/// on first use, shared by the sends in flight, and dropped after a
/// failure of the connection so that the next send connects again. A send
/// cancelled midway (the attempt's timeout) drops it too: a connection
/// that stopped answering without closing would otherwise time out every
/// later attempt until the operating system noticed.
pub struct Slot<C> {
    kept: Arc<Mutex<Kept<C>>>,
}

struct Kept<C> {
    connection: Option<C>,
    /// Counts connections made, so that a late failure of an old one does
    /// not drop its replacement.
    generation: u64,
}

impl<C> Default for Slot<C> {
    fn default() -> Self {
        Self {
            kept: Arc::new(Mutex::new(Kept {
                connection: None,
                generation: 0,
            })),
        }
    }
}

/// A send's hold on the kept connection: says at the end whether the
/// connection is still good; dropped without a word (a cancelled send),
/// it drops the connection.
pub struct InUse<C: Send + 'static> {
    kept: Arc<Mutex<Kept<C>>>,
    generation: u64,
    settled: bool,
}

impl<C: Send + 'static> InUse<C> {
    /// The connection served this send, however the broker answered.
    pub fn keep(mut self) {
        self.settled = true;
    }

    /// The connection failed: drops it (unless already replaced), and
    /// returns it to close.
    pub async fn failed(mut self) -> Option<C> {
        self.settled = true;
        let mut kept = self.kept.lock().await;
        if kept.generation == self.generation {
            kept.connection.take()
        } else {
            None
        }
    }
}

impl<C: Send + 'static> Drop for InUse<C> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (kept, generation) = (self.kept.clone(), self.generation);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut kept = kept.lock().await;
                if kept.generation == generation {
                    kept.connection = None;
                }
            });
        }
    }
}

impl<C: Clone + Send + 'static> Slot<C> {
    /// The kept connection, or a new one from `connect`, with the send's
    /// hold on it.
    pub async fn get<F, Fut>(&self, connect: F) -> Result<(C, InUse<C>), String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, String>>,
    {
        let mut kept = self.kept.lock().await;
        if kept.connection.is_none() {
            let connection = connect().await?;
            kept.generation += 1;
            kept.connection = Some(connection);
        }
        let connection = kept.connection.clone().expect("a connection was just kept");
        let in_use = InUse {
            kept: self.kept.clone(),
            generation: kept.generation,
            settled: false,
        };
        Ok((connection, in_use))
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
        let (first, a) = slot.get(|| async { Ok(1) }).await.unwrap();
        let (again, b) = slot.get(|| async { Ok(2) }).await.unwrap();
        assert_eq!((first, again), (1, 1), "reused");
        b.keep();
        assert_eq!(a.failed().await, Some(1));
        let (second, c) = slot.get(|| async { Ok(2) }).await.unwrap();
        assert_eq!(second, 2, "connected again");
        let (_, late) = slot.get(|| async { Ok(9) }).await.unwrap();
        c.keep();
        let stale = InUse {
            kept: slot.kept.clone(),
            generation: 1,
            settled: false,
        };
        assert_eq!(stale.failed().await, None, "a late failure of the old one");
        late.keep();
        assert_eq!(slot.get(|| async { Ok(3) }).await.unwrap().0, 2);
    }

    #[tokio::test]
    async fn a_send_cancelled_midway_drops_its_connection() {
        let slot = Slot::<u32>::default();
        let (_, in_use) = slot.get(|| async { Ok(1) }).await.unwrap();
        drop(in_use);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            tokio::task::yield_now().await;
            if slot.kept.lock().await.connection.is_none() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "dropped");
        }
        assert_eq!(slot.get(|| async { Ok(2) }).await.unwrap().0, 2);
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
