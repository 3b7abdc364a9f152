//! Redis Streams (`redis://[user:pass@]host[:6379]/STREAM[?db=N]`): each
//! message is one `XADD STREAM * …` entry whose fields are the Standard
//! Webhooks headers (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), `content-type`, and the envelope as `body`; it is
//! sent once Redis answers the entry's id. Note that a Redis URL's path is
//! the stream here, not the database number, which is `?db=`.
//!
//! One multiplexed connection (redis-rs) is kept per destination and shared
//! by the sends in flight; an I/O error drops it, and the next attempt
//! connects again. A refusal by the server (a key of another type, an
//! authentication failure) is a failed attempt with its words.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use reqwest::Url;

use super::{Secret, Slot, connect_any, credentials, decoded, host, only_query, reason};
use crate::BoxFuture;
use crate::outbound::deliver::{Destination, Outcome, Signed};
use crate::outbound::destination::{Guard, Refused};

const DEFAULT_PORT: u16 = 6379;

/// Where and how to add entries, read from the subscription URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    host: String,
    port: u16,
    stream: String,
    db: i64,
    user: Option<String>,
    password: Option<Secret>,
}

impl Address {
    pub fn parse(url: &Url) -> Result<Self, Refused> {
        only_query(url, &["db"])?;
        let stream = decoded(url.path().trim_start_matches('/'), "stream")?;
        if stream.is_empty() {
            return Err(Refused::Shape(
                "redis:// needs a stream as its path (redis://host:6379/STREAM)".to_owned(),
            ));
        }
        let db = match url.query_pairs().find(|(key, _)| key == "db") {
            None => 0,
            Some((_, n)) => n
                .parse()
                .ok()
                .filter(|n: &i64| *n >= 0)
                .ok_or_else(|| Refused::Shape("redis:// db must be a database number".to_owned()))?,
        };
        let (user, password) = credentials(url)?;
        Ok(Self {
            host: host(url)?,
            port: url.port().unwrap_or(DEFAULT_PORT),
            stream,
            db,
            user,
            password,
        })
    }
}

pub struct Redis {
    address: Address,
    guard: Guard,
    timeout: Duration,
    connection: Slot<MultiplexedConnection>,
}

impl Redis {
    pub fn new(address: Address, guard: Guard, timeout: Duration) -> Self {
        Self {
            address,
            guard,
            timeout,
            connection: Slot::default(),
        }
    }

    fn secret(&self) -> Option<&str> {
        self.address.password.as_ref().map(Secret::expose)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let addresses = self.guard.resolve(&self.address.host, self.address.port).await?;
        connect_any(addresses, |address| async move {
            let mut settings = RedisConnectionInfo::default().set_db(self.address.db);
            if let Some(user) = &self.address.user {
                settings = settings.set_username(user);
            }
            if let Some(password) = self.secret() {
                settings = settings.set_password(password);
            }
            let info = ConnectionAddr::Tcp(address.ip().to_string(), address.port())
                .into_connection_info()
                .map_err(|e| reason("cannot connect", e, self.secret()))?
                .set_redis_settings(settings);
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout));
            let client = redis::Client::open(info).map_err(|e| reason("cannot connect", e, self.secret()))?;
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| reason("cannot connect", e, self.secret()))
        })
        .await
    }

    async fn add(&self, message: &Signed) -> Result<(), String> {
        let (mut connection, in_use) = self.connection.get(|| self.connect()).await?;
        let added: Result<String, redis::RedisError> = redis::cmd("XADD")
            .arg(&self.address.stream)
            .arg("*")
            .arg("webhook-id")
            .arg(&message.id)
            .arg("webhook-timestamp")
            .arg(message.timestamp)
            .arg("webhook-signature")
            .arg(&message.signature)
            .arg("content-type")
            .arg("application/json")
            .arg("body")
            .arg(&message.body)
            .query_async(&mut connection)
            .await;
        match added {
            Ok(_) => {
                in_use.keep();
                Ok(())
            }
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                    in_use.failed().await;
                } else {
                    in_use.keep();
                }
                Err(reason("Redis refused the entry", e, self.secret()))
            }
        }
    }
}

impl Destination for Redis {
    fn deliver<'a>(&'a self, message: &'a Signed) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { Outcome::of(self.add(message).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Address, Refused> {
        Address::parse(&Url::parse(url).unwrap())
    }

    #[test]
    fn a_redis_url_gives_the_stream_the_database_and_the_credentials() {
        let address = parse("redis://:s3cret@r.example.com/customer%3Achanges?db=2").unwrap();
        assert_eq!(address.stream, "customer:changes");
        assert_eq!(address.db, 2);
        assert_eq!(address.port, 6379);
        assert_eq!(address.user, None);
        assert_eq!(address.password.as_ref().map(Secret::expose), Some("s3cret"));
        for bad in [
            "redis://r.example.com",
            "redis://r.example.com/",
            "redis://r.example.com/s?db=x",
        ] {
            assert!(matches!(parse(bad), Err(Refused::Shape(_))), "{bad}");
        }
    }
}
