//! The inbound connections (`[[sources]]`, SPEC §1): a platform's kind, its
//! tokens (given, or read from the variable `tokens_env` names), who may
//! send and how often.

use std::collections::HashSet;

use axum::http::HeaderName;
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::values::IpRange;
use super::{ConfigError, Secret};
use crate::model::Country;
use crate::sources::{Kind, SourceSettings};

/// One inbound connection (SPEC §1).
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: Kind,
    pub settings: SourceSettings,
    /// Any one is accepted, so that tokens can be rotated.
    pub tokens: Vec<Secret>,
    /// Overrides the header the platform's adapter reads the token from.
    pub auth_header: Option<HeaderName>,
    /// Empty: any sender.
    pub allow_ips: Vec<IpRange>,
    /// Deliveries per second this source may send (a burst of as many);
    /// beyond, `429`. `None`: no limit.
    pub rate_limit: Option<u32>,
}

impl Source {
    pub fn name(&self) -> &str {
        &self.settings.name
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    name: String,
    kind: Kind,
    #[serde(default)]
    tokens: Vec<String>,
    tokens_env: Option<String>,
    auth_header: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    default_country: Option<Country>,
    timezone: Option<String>,
    account: Option<String>,
    rate_limit: Option<u32>,
}

/// The sources in the file's order, their names unique; `env` holds the
/// variables `tokens_env` may name.
pub(super) fn validate(
    raws: Vec<RawSource>,
    env: &[(String, String)],
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Vec<Source>, ConfigError> {
    let mut names = HashSet::new();
    let mut sources = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        let key = |field: &str| format!("sources[{i}].{field}");
        if raw.name.is_empty()
            || !raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                &key("name"),
                "must be non-empty letters, digits, '-' or '_' (it is a URL segment)".to_owned(),
            ));
        }
        if !names.insert(raw.name.clone()) {
            return Err(invalid(
                &key("name"),
                format!("{:?} is used by another source", raw.name),
            ));
        }
        let mut tokens: Vec<Secret> = raw.tokens.into_iter().map(Secret).collect();
        if let Some(var) = &raw.tokens_env {
            let value = env
                .iter()
                .find(|(name, _)| name == var)
                .map(|(_, value)| value)
                .ok_or_else(|| {
                    invalid(
                        &key("tokens_env"),
                        format!("names the variable {var}, which is not set"),
                    )
                })?;
            tokens.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Secret(t.to_owned())),
            );
        }
        if tokens.iter().any(|t| t.0.trim().is_empty()) {
            return Err(invalid(&key("tokens"), "must not hold an empty token".to_owned()));
        }
        if tokens.is_empty() {
            return Err(invalid(
                &key("tokens"),
                "is missing: give `tokens = [\"…\"]` or `tokens_env = \"VARIABLE\"`".to_owned(),
            ));
        }
        let auth_header = raw
            .auth_header
            .map(|h| {
                HeaderName::try_from(h.as_str())
                    .map_err(|_| invalid(&key("auth_header"), format!("{h:?} is not a header name")))
            })
            .transpose()?;
        let allow_ips = raw
            .allow_ips
            .iter()
            .map(|s| {
                IpRange::parse(s)
                    .ok_or_else(|| invalid(&key("allow_ips"), format!("{s:?} is not an IP address or CIDR block")))
            })
            .collect::<Result<_, _>>()?;
        let timezone = match raw.timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(&name).map_err(|_| {
                invalid(
                    &key("timezone"),
                    format!("{name:?} is not an IANA time zone such as \"America/Los_Angeles\""),
                )
            })?,
        };
        sources.push(Source {
            kind: raw.kind,
            settings: SourceSettings {
                name: raw.name,
                default_country: raw.default_country,
                timezone,
                account: match raw.account.filter(|a| !a.trim().is_empty()) {
                    Some(account) if account.contains(':') => {
                        return Err(invalid(
                            &key("account"),
                            "must not contain ':' (it is part of customer ids)".to_owned(),
                        ));
                    }
                    account => account,
                },
            },
            tokens,
            auth_header,
            allow_ips,
            rate_limit: match raw.rate_limit {
                Some(0) => {
                    return Err(invalid(
                        &key("rate_limit"),
                        "must be at least 1 (per second)".to_owned(),
                    ));
                }
                limit => limit,
            },
        });
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, load};

    #[test]
    fn tokens_env_is_read_and_not_taken_for_a_key() {
        let text = MINIMAL.replace("tokens = [\"t1\", \"t2\"]", "tokens_env = \"CLIENTELE_TREEZ_TOKENS\"");
        let config = load(&text, &[("CLIENTELE_TREEZ_TOKENS", "a, b,")]).unwrap();
        let tokens: Vec<&str> = config.sources[0].tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["a", "b"]);
    }
}
