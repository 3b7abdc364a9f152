pub mod app;
pub mod config;
pub mod http;
pub mod model;
pub mod outbound;
pub mod sources;
pub mod store;
pub mod telemetry;
