//! Values that several areas of the configuration read the same way:
//! durations (`"5s"`, `"30m"`) and IP ranges (`"10.0.0.0/8"`), each error
//! naming the key it was read at.

use std::net::IpAddr;
use std::time::Duration;

use super::ConfigError;

/// One address or a CIDR block: an allowed sender, or a non-public network
/// outbound messages may reach. An [`ipnet::IpNet`]; a bare address is a
/// block of one, and an IPv4 block also holds the IPv4-mapped IPv6 forms
/// of its addresses (a dual-stack listener sees IPv4 peers that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange(ipnet::IpNet);

impl IpRange {
    pub fn parse(s: &str) -> Option<Self> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .ok()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.0, ip) {
            (ipnet::IpNet::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        self.0.contains(&ip)
    }
}

/// A duration such as `"5s"` or `"30m"`, at `key`.
pub(super) fn duration(
    key: &str,
    text: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    text.parse::<jiff::SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?} is not a duration such as \"5s\", \"30m\" or \"2h\""),
            )
        })
}

/// A duration more than zero at `key`, or `default` when it is not set.
pub(super) fn positive_duration(
    key: &str,
    text: Option<String>,
    default: Duration,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let value = duration(key, &text, invalid)?;
    if value.is_zero() {
        return Err(invalid(key, "must be more than zero".to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_match_addresses_and_blocks() {
        let block = IpRange::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = IpRange::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(IpRange::parse("10.0.0.0/33").is_none());
    }
}
