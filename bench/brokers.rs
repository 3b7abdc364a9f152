//! The brokers' side of the destination benchmark (`bench/brokers.sh`):
//! makes what Clientele publishes to and never creates itself (a JetStream
//! stream on `bench.>`, a RabbitMQ topic exchange with a queue bound to
//! everything), counts what arrived, and removes it all again.
//!
//! `cargo run --release --example brokers -- setup|count|teardown`
//! (NATS 127.0.0.1:4222, RabbitMQ 127.0.0.1:5672 guest/guest, Redis
//! 127.0.0.1:6379; stream, exchange, queue and Redis stream all named
//! `clientele-bench`, the JetStream stream `CLIENTELE_BENCH`).

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

const NAME: &str = "clientele-bench";
const STREAM: &str = "CLIENTELE_BENCH";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let what = std::env::args().nth(1).unwrap_or_default();
    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    let amqp = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", ConnectionProperties::default()).await?;
    let channel = amqp.create_channel().await?;
    let mut redis = redis::Client::open("redis://127.0.0.1:6379/")?
        .get_multiplexed_async_connection()
        .await?;
    match what.as_str() {
        "setup" => {
            js.create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.to_owned(),
                subjects: vec!["bench.>".to_owned()],
                ..Default::default()
            })
            .await?;
            channel
                .exchange_declare(
                    NAME.into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_declare(NAME.into(), QueueDeclareOptions::default(), FieldTable::default())
                .await?;
            channel
                .queue_bind(
                    NAME.into(),
                    NAME.into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        "count" => {
            let nats = js.get_stream(STREAM).await?.info().await?.state.messages;
            let queue = channel
                .queue_declare(
                    NAME.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let redis: u64 = redis::cmd("XLEN").arg(NAME).query_async(&mut redis).await?;
            println!("nats={nats} amqp={} redis={redis}", queue.message_count());
        }
        "teardown" => {
            let _ = js.delete_stream(STREAM).await;
            let _ = channel.queue_delete(NAME.into(), QueueDeleteOptions::default()).await;
            let _ = channel
                .exchange_delete(NAME.into(), ExchangeDeleteOptions::default())
                .await;
            let _: () = redis::cmd("DEL").arg(NAME).query_async(&mut redis).await?;
        }
        other => return Err(format!("expected setup, count or teardown, not {other:?}").into()),
    }
    Ok(())
}
