//! `clientele serve` on a simulated clock, for `bench/retention.sh`: the
//! configuration as `serve` reads it (the built-in example and the
//! `CLIENTELE_*` variables), the store, ingest and the compactor as
//! `serve` runs them, but the clock retention reads (`src/clock.rs`) is
//! one this program moves: each `SIGUSR1` moves it a day forward and
//! prints `day N` on stdout. `SIGTERM` or Ctrl-C stops it as `serve` stops.
//! Not part of the `clientele` binary: an example, built on purpose.
//!
//!   cargo build --example retention && target/debug/examples/retention serve

use std::time::Duration;

use anyhow::{Context, bail};
use clientele::app;
use clientele::clock::Clock;
use clientele::config::Config;
use clientele::telemetry;
use tokio::signal::unix::{SignalKind, signal};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `serve` and nothing else, as bench/common.sh starts Clientele.
    if std::env::args().skip(1).ne(["serve".to_owned()]) {
        bail!("usage: retention serve (configured by CLIENTELE_* variables)");
    }
    let (clock, hand) = Clock::simulated();
    let config = Config {
        clock,
        ..Config::load(None).context("invalid configuration")?
    };
    telemetry::init_logging(config.log_format);
    let mut next_day = signal(SignalKind::user_defined1())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut day = 0;
        while next_day.recv().await.is_some() {
            hand.advance(DAY);
            day += 1;
            println!("day {day}");
        }
    });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    app::serve(config, listener, async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
    .await?;
    Ok(())
}
