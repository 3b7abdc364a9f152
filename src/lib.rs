//! Clientele, a customer-webhook hub: platforms' customer webhooks in,
//! one current customer directory kept, each real change out as a signed
//! webhook.
//!
//! The data flows [`sources`] → [`model`] → [`store`] → [`outbound`], with
//! [`http`] at the edge and [`app`] assembling the pieces for `main`:
//! an adapter turns a platform's body into canonical events, the store
//! keeps the delivery and folds it into the directory in one transaction,
//! and the dispatcher sends each change to the subscriptions that want it.
//! `docs/ARCHITECTURE.md` draws the path through the tree.

pub mod app;
pub mod clock;
pub mod config;
pub mod console;
pub mod directory;
pub mod export;
pub mod http;
pub mod import;
pub mod model;
pub mod outbound;
pub mod persons;
pub mod rebuild;
pub mod resolver;
pub mod retention;
pub mod sources;
pub mod store;
pub mod telemetry;

/// A boxed future, as the store's roles return them (traits used as
/// `dyn`, so their methods cannot be `async fn`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
