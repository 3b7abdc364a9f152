//! The HTTP server's waits for a client (`[http]`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::values::positive_duration;

/// How long the HTTP server waits for a client (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// For a request's head, counted from the moment the connection waits
    /// for it: also how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// For a request's whole body, counted from its head.
    pub body_timeout: Duration,
    /// On a stop, for the requests in flight to finish; then their
    /// connections are dropped.
    pub stop_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    stop_timeout: Option<String>,
}

impl RawHttp {
    pub(super) fn validate(self, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<HttpSettings, ConfigError> {
        let defaults = HttpSettings::default();
        Ok(HttpSettings {
            header_timeout: positive_duration(
                "http.header_timeout",
                self.header_timeout,
                defaults.header_timeout,
                invalid,
            )?,
            body_timeout: positive_duration("http.body_timeout", self.body_timeout, defaults.body_timeout, invalid)?,
            stop_timeout: positive_duration("http.stop_timeout", self.stop_timeout, defaults.stop_timeout, invalid)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, load};

    #[test]
    fn http_timeouts_have_defaults_and_read_durations() {
        assert_eq!(load(MINIMAL, &[]).unwrap().http, HttpSettings::default());
        let text = format!("{MINIMAL}\n[http]\nheader_timeout = \"200ms\"\nbody_timeout = \"1m\"\n");
        let config = load(&text, &[("CLIENTELE_HTTP__STOP_TIMEOUT", "5s")]).unwrap();
        assert_eq!(
            config.http,
            HttpSettings {
                header_timeout: Duration::from_millis(200),
                body_timeout: Duration::from_secs(60),
                stop_timeout: Duration::from_secs(5),
            }
        );
        let err = load(&format!("{MINIMAL}\n[http]\nbody_timeout = \"0s\"\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("http.body_timeout"), "{err}");
    }
}
