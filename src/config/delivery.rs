//! How outbound messages are sent (`[delivery]`, SPEC §6): the retry
//! schedule, the wait for an answer, the non-public networks allowed.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::values::{IpRange, duration, positive_duration};

/// The longest `delivery.timeout`: a send is never worth waiting longer,
/// and a bound keeps its claim's lease well inside the range of times.
const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(3600);

/// How outbound messages are sent (`[delivery]`, SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    /// The wait before each retry; the first attempt is immediate.
    pub retry_schedule: Vec<Duration>,
    /// An answer later than this is a failed attempt.
    pub timeout: Duration,
    /// Non-public networks messages may be sent to (SPEC §16); any other
    /// non-public address is refused.
    pub allow_private: Vec<IpRange>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        let schedule = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        Self {
            retry_schedule: schedule.into_iter().map(Duration::from_secs).collect(),
            timeout: Duration::from_secs(15),
            allow_private: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    #[serde(default)]
    allow_private: Vec<String>,
}

impl RawDelivery {
    pub(super) fn validate(
        self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<DeliverySettings, ConfigError> {
        let defaults = DeliverySettings::default();
        let retry_schedule = match self.retry_schedule {
            None => defaults.retry_schedule,
            Some(entries) => entries
                .iter()
                .map(|entry| duration("delivery.retry_schedule", entry, invalid))
                .collect::<Result<_, _>>()?,
        };
        let allow_private = self
            .allow_private
            .iter()
            .map(|s| {
                IpRange::parse(s).ok_or_else(|| {
                    invalid(
                        "delivery.allow_private",
                        format!("{s:?} is not an IP address or CIDR block such as \"10.0.0.0/8\""),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let timeout = positive_duration("delivery.timeout", self.timeout, defaults.timeout, invalid)?;
        if timeout > MAX_DELIVERY_TIMEOUT {
            return Err(invalid("delivery.timeout", "must be at most \"1h\"".to_owned()));
        }
        Ok(DeliverySettings {
            retry_schedule,
            timeout,
            allow_private,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::tests::{MINIMAL, load};

    #[test]
    fn delivery_has_the_spec_defaults_and_reads_durations() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.delivery, DeliverySettings::default());
        assert_eq!(config.delivery.retry_schedule[1], Duration::from_secs(300));
        let text = format!("{MINIMAL}\n[delivery]\nretry_schedule = [\"10ms\", \"2h\"]\ntimeout = \"1s\"\n");
        let config = load(&text, &[("CLIENTELE_DELIVERY__TIMEOUT", "3s")]).unwrap();
        assert_eq!(
            config.delivery.retry_schedule,
            [Duration::from_millis(10), Duration::from_secs(7200)]
        );
        assert_eq!(config.delivery.timeout, Duration::from_secs(3));
        let err = load(&format!("{MINIMAL}\n[delivery]\ntimeout = \"soon\"\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("delivery.timeout"), "{err}");
    }

    #[test]
    fn a_delivery_timeout_over_an_hour_is_refused_naming_the_key() {
        let text = format!("{MINIMAL}\n[delivery]\ntimeout = \"1h\"\n");
        assert_eq!(load(&text, &[]).unwrap().delivery.timeout, Duration::from_secs(3600));
        for timeout in ["61m", "300000000000s"] {
            let text = format!("{MINIMAL}\n[delivery]\ntimeout = \"{timeout}\"\n");
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains("delivery.timeout") && err.contains("at most"), "{err}");
        }
    }

    #[test]
    fn allow_private_reads_networks_from_the_file_or_the_environment() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let text = format!("{MINIMAL}\n[delivery]\nallow_private = [\"10.0.0.0/8\", \"127.0.0.1\"]\n");
        let config = load(&text, &[]).unwrap();
        let allowed = &config.delivery.allow_private;
        assert!(allowed[0].contains(ip("10.2.3.4")) && allowed[1].contains(ip("127.0.0.1")));
        let config = load(
            MINIMAL,
            &[("CLIENTELE_DELIVERY__ALLOW_PRIVATE", r#"["192.168.0.0/16"]"#)],
        )
        .unwrap();
        assert!(config.delivery.allow_private[0].contains(ip("192.168.1.1")));
        let err = load(&format!("{MINIMAL}\n[delivery]\nallow_private = [\"intranet\"]\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("delivery.allow_private"), "{err}");
    }
}
