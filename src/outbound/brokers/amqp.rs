//! RabbitMQ (`amqp://user:pass@host[:5672]/vhost?exchange=X`): each message
//! is published to the exchange with the routing key `{type}.{action}`,
//! persistent (delivery mode 2), `mandatory`, the envelope id as
//! `message_id` and the Standard Webhooks headers as message headers; it is
//! sent once the broker confirms it (publisher confirms). A message no
//! queue is bound for comes back, and is a failed attempt rather than a
//! silent drop; an exchange that does not exist is one too, with the
//! broker's reason.
//!
//! The connection and its confirming channel (lapin) are kept per
//! destination; an error closes them, and the next attempt connects again.
//! The vhost is the URL's path (`%2f` or empty: `/`).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use reqwest::Url;
use std::sync::Arc;

use super::{Secret, Slot, connect_any, credentials, decoded, host, only_query, reason};
use crate::BoxFuture;
use crate::outbound::deliver::{Destination, Outcome, Signed};
use crate::outbound::destination::{Guard, Refused};

const DEFAULT_PORT: u16 = 5672;
/// AMQP's persistent delivery mode.
const PERSISTENT: u8 = 2;

/// Where and how to publish, read from the subscription URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    host: String,
    port: u16,
    vhost: String,
    exchange: String,
    /// RabbitMQ's default (`guest`) when absent.
    user: Option<String>,
    password: Option<Secret>,
}

impl Address {
    pub fn parse(url: &Url) -> Result<Self, Refused> {
        only_query(url, &["exchange"])?;
        let exchange = url
            .query_pairs()
            .find(|(key, _)| key == "exchange")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        if exchange.is_empty() {
            return Err(Refused::Shape(
                "amqp:// needs an exchange (amqp://user:pass@host:5672/vhost?exchange=X)".to_owned(),
            ));
        }
        let vhost = match url.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            vhost => decoded(vhost, "vhost")?,
        };
        let (user, password) = credentials(url)?;
        Ok(Self {
            host: host(url)?,
            port: url.port().unwrap_or(DEFAULT_PORT),
            vhost,
            exchange,
            user,
            password,
        })
    }
}

/// A connection and its channel in confirm mode.
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    channel: Channel,
}

pub struct Amqp {
    address: Address,
    guard: Guard,
    timeout: Duration,
    link: Slot<Link>,
}

impl Amqp {
    pub fn new(address: Address, guard: Guard, timeout: Duration) -> Self {
        Self {
            address,
            guard,
            timeout,
            link: Slot::default(),
        }
    }

    fn secret(&self) -> Option<&str> {
        self.address.password.as_ref().map(Secret::expose)
    }

    async fn connect(&self) -> Result<Link, String> {
        let addresses = self.guard.resolve(&self.address.host, self.address.port).await?;
        connect_any(addresses, |address| async move {
            let defaults = AMQPUserInfo::default();
            let uri = AMQPUri {
                scheme: AMQPScheme::AMQP,
                authority: AMQPAuthority {
                    userinfo: AMQPUserInfo {
                        username: self.address.user.clone().unwrap_or(defaults.username),
                        password: self.secret().map_or(defaults.password, str::to_owned),
                    },
                    host: address.ip().to_string(),
                    port: address.port(),
                },
                vhost: self.address.vhost.clone(),
                query: AMQPQueryString {
                    connection_timeout: Some(self.timeout.as_millis() as u64),
                    ..AMQPQueryString::default()
                },
            };
            let properties = ConnectionProperties::default().with_connection_name("clientele".into());
            let connection = Connection::connect_uri(uri, properties)
                .await
                .map_err(|e| reason("cannot connect", e, self.secret()))?;
            let channel = async {
                let channel = connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                Ok::<_, lapin::Error>(channel)
            }
            .await
            .map_err(|e| reason("cannot open a channel", e, self.secret()))?;
            Ok(Link {
                connection: Arc::new(connection),
                channel,
            })
        })
        .await
    }

    async fn publish(&self, message: &Signed) -> Result<(), String> {
        let (link, in_use) = self.link.get(|| self.connect()).await?;
        let result = self.publish_on(&link.channel, message).await;
        if result.is_err() && (!link.channel.status().connected() || !link.connection.status().connected()) {
            // A refused publish (no such exchange) closes the channel: the
            // next attempt opens another, on a new connection.
            if let Some(failed) = in_use.failed().await {
                tokio::spawn(async move {
                    let _ = failed.connection.close(200, "reconnecting".into()).await;
                });
            }
        } else {
            in_use.keep();
        }
        result
    }

    async fn publish_on(&self, channel: &Channel, message: &Signed) -> Result<(), String> {
        let mut headers = FieldTable::default();
        for (name, value) in [
            ("webhook-id", message.id.clone()),
            ("webhook-timestamp", message.timestamp.to_string()),
            ("webhook-signature", message.signature.clone()),
        ] {
            headers.insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
        }
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(message.id.as_str().into())
            .with_timestamp(message.timestamp.max(0) as u64)
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let secret = self.secret();
        let confirm = channel
            .basic_publish(
                self.address.exchange.as_str().into(),
                message.routing_key().into(),
                options,
                message.body.as_bytes(),
                properties,
            )
            .await
            .map_err(|e| reason("cannot publish", e, secret))?;
        match confirm
            .await
            .map_err(|e| reason("RabbitMQ refused the message", e, secret))?
        {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(format!(
                "RabbitMQ returned the message: {} {} (no queue is bound for routing key {:?})",
                returned.reply_code,
                returned.reply_text,
                message.routing_key()
            )),
            Confirmation::Nack(None) => Err("RabbitMQ did not confirm the message (nack)".to_owned()),
            Confirmation::NotRequested => Err("the channel is not in confirm mode".to_owned()),
        }
    }
}

impl Destination for Amqp {
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
    fn an_amqp_url_gives_the_vhost_the_exchange_and_the_credentials() {
        let address = parse("amqp://u:p%2Fw@mq.example.com/%2f?exchange=customers").unwrap();
        assert_eq!(address.vhost, "/");
        assert_eq!(address.exchange, "customers");
        assert_eq!(address.port, 5672);
        assert_eq!(address.password.as_ref().map(Secret::expose), Some("p/w"));
        let named = parse("amqp://mq.example.com:5673/prod?exchange=x").unwrap();
        assert_eq!((named.vhost.as_str(), named.port, named.user), ("prod", 5673, None));
        assert_eq!(parse("amqp://mq.example.com?exchange=x").unwrap().vhost, "/");
        for bad in [
            "amqp://mq.example.com/",
            "amqp://mq.example.com/?exchange=",
            "amqp://mq.example.com/?exchange=x&heartbeat=1",
        ] {
            assert!(matches!(parse(bad), Err(Refused::Shape(_))), "{bad}");
        }
    }
}
