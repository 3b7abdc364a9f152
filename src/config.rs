//! Configuration: the TOML file of SPEC §2, overridden by `CLIENTELE_*`
//! environment variables, validated into typed settings.
//!
//! `main` loads it once; the HTTP layer reads the sources and tokens, the
//! store layer the store URL. Every error names the key at fault
//! (`sources[1].timezone`), where it was given (the file, or the
//! environment variable that set it) and what to do about it; no secret
//! ever reaches an error, a `Debug` or a log line.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderName;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::model::Country;
use crate::sources::{Kind, SourceSettings};

/// The example configuration, committed as `clientele.example.toml`: what
/// `serve` runs when no `--config` is given.
pub const EXAMPLE: &str = include_str!("../clientele.example.toml");

const ENV_PREFIX: &str = "CLIENTELE_";

/// The keys an environment variable may set to something other than a
/// string.
/// The longest `delivery.timeout`: a send is never worth waiting longer,
/// and a bound keeps its claim's lease well inside the range of times.
const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(3600);
const TYPED_KEYS: [&str; 4] = [
    "max_body_bytes",
    "delivery.retry_schedule",
    "delivery.allow_private",
    "http.trust_forwarded_proto",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `reason` is in the message, so it is no `source()` as well: the
    /// CLI prints an error's causes after it.
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: `{key}`: {problem}")]
    Invalid {
        origin: String,
        key: String,
        problem: String,
    },
}

/// A secret from the config: compared, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl fmt::Display for StoreUrl {
    /// Shown in logs: a Postgres URL loses its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => f.write_str(&without_passwords(url)),
        }
    }
}

/// A Postgres URL without its passwords: the one of its user information
/// (`user:password@`) and those of its query (`password=`,
/// `sslpassword=`), which libpq and sqlx read too.
fn without_passwords(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let end = url[scheme..].find(['/', '?']).map_or(url.len(), |i| scheme + i);
    let (authority, rest) = (&url[scheme..end], &url[end..]);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or_default();
            format!("{user}{}", &authority[at..])
        }
        None => authority.to_owned(),
    };
    let rest = match rest.split_once('?') {
        None => rest.to_owned(),
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if ["password", "sslpassword"].contains(&key.to_ascii_lowercase().as_str()) => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    };
    format!("{}{authority}{rest}", &url[..scheme])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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
    /// Whether a request's `X-Forwarded-Proto: https` says it came over
    /// TLS (to a proxy in front): the console's cookie is then `Secure`.
    /// Only behind a proxy that sets the header itself.
    pub trust_forwarded_proto: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(20),
            trust_forwarded_proto: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreUrl,
    pub admin_token: Secret,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
    pub sources: Vec<Source>,
    pub delivery: DeliverySettings,
    pub http: HttpSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    store: Option<String>,
    admin_token: Option<String>,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    retry_schedule: Option<Vec<String>>,
    timeout: Option<String>,
    #[serde(default)]
    allow_private: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    stop_timeout: Option<String>,
    #[serde(default)]
    trust_forwarded_proto: bool,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
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

impl Config {
    /// Reads `path`, or the committed example when `None`, then applies the
    /// process environment.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
                    path: path.to_owned(),
                    reason,
                })?;
                (path.display().to_string(), text)
            }
            None => ("clientele.example.toml (built in)".to_owned(), EXAMPLE.to_owned()),
        };
        Self::from_toml(&origin, &text, std::env::vars())
    }

    /// Parses `text` with the given environment; `origin` names the file in
    /// messages.
    pub fn from_toml(
        origin: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(origin, text, e))?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        let places = Places {
            file: origin.to_owned(),
            overrides: apply_env(&mut table, &env)?,
        };
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| places.type_error(e))?;
        raw.validate(&places, &env)
    }
}

/// Where each key was given: the file, unless an environment variable
/// overrides it.
struct Places {
    file: String,
    /// `(key, variable)`: `("delivery.timeout", "CLIENTELE_DELIVERY__TIMEOUT")`.
    overrides: Vec<(String, String)>,
}

impl Places {
    /// Where `key` (`listen`, `sources[0].tokens`, `delivery.retry_schedule[1]`)
    /// was given.
    fn of(&self, key: &str) -> String {
        let within = |set: &str| {
            key.strip_prefix(set)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        match self.overrides.iter().find(|(set, _)| within(set)) {
            Some((_, variable)) => format!("environment variable {variable}"),
            None => self.file.clone(),
        }
    }

    fn invalid(&self, key: &str, problem: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.of(key),
            key: key.to_owned(),
            problem,
        }
    }

    /// A value of the wrong type or an unknown key, at its path. serde's
    /// message shows the value it got, so a secret key's error says only
    /// what is expected.
    fn type_error(&self, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let secret = e.path().iter().find_map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } if SECRET_KEYS.contains(&key.as_str()) => Some(key.clone()),
            _ => None,
        });
        let key = e.path().to_string();
        let problem = match secret.as_deref() {
            Some("tokens") => "must be a list of strings (the value is a secret: not shown)".to_owned(),
            Some(_) => "must be a string (the value is a secret: not shown)".to_owned(),
            None => e.into_inner().message().to_owned(),
        };
        if key == "." {
            return ConfigError::Parse {
                origin: self.file.clone(),
                message: problem,
            };
        }
        self.invalid(&key, problem)
    }
}

/// Keys whose values are secrets, at any depth.
const SECRET_KEYS: [&str; 2] = ["admin_token", "tokens"];

/// A TOML error in `text`: where and what, naming the key but not repeating
/// the offending line, which may hold a secret.
fn parse_error(origin: &str, text: &str, e: toml::de::Error) -> ConfigError {
    let message = match e.span().and_then(|span| text.get(..span.start)) {
        Some(before) => {
            let line = before.matches('\n').count() + 1;
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim());
            match key {
                Some(key) => format!("line {line}, `{key}`: {}", e.message()),
                None => format!("line {line}: {}", e.message()),
            }
        }
        None => e.message().to_owned(),
    };
    ConfigError::Parse {
        origin: origin.to_owned(),
        message,
    }
}

/// The variables that the `tokens_env` keys of `table` name, at any depth
/// (a source mistyped as `[sources]` still names its secret).
fn tokens_env_names(table: &toml::Table, names: &mut HashSet<String>) {
    for (key, value) in table {
        match value {
            toml::Value::String(name) if key == "tokens_env" => {
                names.insert(name.clone());
            }
            toml::Value::Table(inner) => tokens_env_names(inner, names),
            toml::Value::Array(items) => items
                .iter()
                .filter_map(toml::Value::as_table)
                .for_each(|inner| tokens_env_names(inner, names)),
            _ => {}
        }
    }
}

/// Applies `CLIENTELE_KEY` and `CLIENTELE_SECTION__KEY` variables to the
/// table; returns the keys set, each with its variable. Variables named by
/// a `tokens_env` anywhere in the file hold secrets, not config keys, and
/// are skipped.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut secret_vars = HashSet::new();
    tokens_env_names(table, &mut secret_vars);
    let mut used = Vec::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if secret_vars.contains(name) {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        // The keys that are not strings read their value as TOML (a
        // number, a list); every other value is a string as given, so that a
        // token that looks like a number stays a token.
        let parsed = TYPED_KEYS
            .contains(&path.join(".").as_str())
            .then(|| toml::from_str::<toml::Table>(&format!("v = {value}")).ok()?.remove("v"))
            .flatten()
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let (last, sections) = path.split_last().expect("split yields one item at least");
        let mut target = &mut *table;
        for section in sections {
            let entry = target
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            target = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
                origin: "environment".to_owned(),
                key: name.clone(),
                problem: format!("names `{section}`, which is not a section"),
            })?;
        }
        target.insert(last.clone(), parsed);
        used.push((path.join("."), name.clone()));
    }
    Ok(used)
}

/// A duration such as `"5s"` or `"30m"`, at `key`.
fn duration(key: &str, text: &str, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<Duration, ConfigError> {
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
fn positive_duration(
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

impl RawDelivery {
    fn validate(self, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<DeliverySettings, ConfigError> {
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

impl RawHttp {
    fn validate(self, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<HttpSettings, ConfigError> {
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
            trust_forwarded_proto: self.trust_forwarded_proto,
        })
    }
}

impl RawConfig {
    fn validate(self, places: &Places, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let invalid = |key: &str, problem: String| places.invalid(key, problem);
        let required = |key: &str, value: Option<String>| {
            value.ok_or_else(|| {
                let variable = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
                invalid(key, format!("is missing: set it in the file or as {variable}"))
            })
        };
        let listen_text = required("listen", self.listen)?;
        let store_text = required("store", self.store)?;
        let admin_token = required("admin_token", self.admin_token)?;
        let listen = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address and port such as \"127.0.0.1:8080\""),
            )
        })?;
        let store = if let Some(path) = store_text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(invalid("store", "needs a file path after sqlite://".to_owned()));
            }
            StoreUrl::Sqlite(PathBuf::from(path))
        } else if store_text.starts_with("postgres://") || store_text.starts_with("postgresql://") {
            StoreUrl::Postgres(store_text)
        } else {
            return Err(invalid(
                "store",
                "must start with sqlite:// (embedded) or postgres://".to_owned(),
            ));
        };
        if admin_token.trim().is_empty() {
            return Err(invalid("admin_token", "must not be empty".to_owned()));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be at least 1".to_owned()));
        }
        let mut names = HashSet::new();
        let mut sources = Vec::with_capacity(self.sources.len());
        for (i, raw) in self.sources.into_iter().enumerate() {
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
        let delivery = self.delivery.validate(&invalid)?;
        let http = self.http.validate(&invalid)?;
        Ok(Config {
            delivery,
            http,
            listen,
            store,
            admin_token: Secret(admin_token),
            max_body_bytes: self.max_body_bytes,
            log_format: self.log_format,
            sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_is_shown_without_its_passwords() {
        let shown = |url: &str| StoreUrl::Postgres(url.to_owned()).to_string();
        assert_eq!(
            shown("postgres://app:s3cret@db:5432/c?sslmode=require"),
            "postgres://app@db:5432/c?sslmode=require"
        );
        assert_eq!(
            shown("postgres://app@db/c?options[search_path]=s2&password=s3cret&sslpassword=k3y"),
            "postgres://app@db/c?options[search_path]=s2&password=***&sslpassword=***"
        );
        assert_eq!(
            shown("postgres://db/c?application_name=a@b"),
            "postgres://db/c?application_name=a@b",
            "an @ past the host is not user information"
        );
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml("test.toml", text, env)
    }

    const MINIMAL: &str = r#"
listen = "127.0.0.1:8080"
store = "sqlite://./data/c.db"
admin_token = "admin"

[[sources]]
name = "treez"
kind = "treez"
tokens = ["t1", "t2"]
default_country = "us"
timezone = "America/Los_Angeles"
"#;

    #[test]
    fn the_example_file_loads() {
        let config = load(EXAMPLE, &[]).unwrap();
        assert_eq!(config.store, StoreUrl::Sqlite("./clientele-data/clientele.db".into()));
        assert!(config.sources.iter().any(|s| s.kind == Kind::Vagaro));
        assert!(config.sources.iter().any(|s| s.kind == Kind::Treez));
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        let source = &config.sources[0];
        assert_eq!(source.settings.default_country, Country::parse("US"));
        assert_eq!(source.tokens.len(), 2);
        assert_eq!(source.settings.timezone.iana_name(), Some("America/Los_Angeles"));
    }

    #[test]
    fn environment_overrides_the_file_with_types() {
        let config = load(
            MINIMAL,
            &[
                ("CLIENTELE_LISTEN", "0.0.0.0:9000"),
                ("CLIENTELE_MAX_BODY_BYTES", "2048"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.max_body_bytes, 2048);
    }

    #[test]
    fn tokens_env_is_read_and_not_taken_for_a_key() {
        let text = MINIMAL.replace("tokens = [\"t1\", \"t2\"]", "tokens_env = \"CLIENTELE_TREEZ_TOKENS\"");
        let config = load(&text, &[("CLIENTELE_TREEZ_TOKENS", "a, b,")]).unwrap();
        let tokens: Vec<&str> = config.sources[0].tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["a", "b"]);
    }

    #[test]
    fn environment_values_are_strings_unless_the_key_is_not() {
        let config = load(MINIMAL, &[("CLIENTELE_ADMIN_TOKEN", "8675309123")]).unwrap();
        assert_eq!(config.admin_token.expose(), "8675309123");
        let err = load("admin_token = [\"s3cret-value\"\n", &[]).unwrap_err().to_string();
        assert!(
            !err.contains("s3cret-value"),
            "the offending line is not repeated: {err}"
        );
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_them() {
        let err = load(&format!("lisen = \"x\"\n{MINIMAL}"), &[]).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = load(MINIMAL, &[("CLIENTELE_BOGUS", "1")]).unwrap_err().to_string();
        assert!(err.contains("bogus") && err.contains("CLIENTELE_BOGUS"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (MINIMAL.replace("\"us\"", "\"XX\""), "default_country"),
            (
                MINIMAL.replace("America/Los_Angeles", "Mars/Olympus"),
                "sources[0].timezone",
            ),
            (MINIMAL.replace("127.0.0.1:8080", "localhost"), "listen"),
            (MINIMAL.replace("sqlite://./data/c.db", "mysql://x"), "store"),
            (MINIMAL.replace("tokens = [\"t1\", \"t2\"]", ""), "sources[0].tokens"),
            (MINIMAL.replace("name = \"treez\"", "name = \"a/b\""), "sources[0].name"),
            (MINIMAL.replace("kind = \"treez\"", "kind = \"square\""), "kind"),
        ];
        for (text, key) in cases {
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    /// MINIMAL with a second source, so that indexes are seen to count.
    fn two_sources(extra: &str) -> String {
        format!("{MINIMAL}\n[[sources]]\nname = \"vagaro\"\nkind = \"vagaro\"\ntokens = [\"v1\"]\n{extra}")
    }

    /// Asserts that loading `text` with `env` fails with a message that
    /// holds every one of `present` and none of `absent`.
    fn assert_error(text: &str, env: &[(&str, &str)], present: &[&str], absent: &[&str]) {
        let err = load(text, env).unwrap_err().to_string();
        for part in present {
            assert!(err.contains(part), "{part:?} in {err}");
        }
        for part in absent {
            assert!(!err.contains(part), "no {part:?} in {err}");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_place_it_really_is() {
        assert_error(
            &two_sources("bogus = 1\ndefault_country = \"US\"\n"),
            &[],
            &["test.toml", "`sources[1].bogus`", "unknown field `bogus`"],
            &["default_country`:", "line"],
        );
        assert_error(
            MINIMAL,
            &[("CLIENTELE_BOGUS", "1")],
            &["environment variable CLIENTELE_BOGUS", "`bogus`", "unknown field"],
            &["admin_token`:", "test.toml"],
        );
        assert_error(
            MINIMAL,
            &[("CLIENTELE_LISTEN", "127.0.0.1:1"), ("CLIENTELE_DELIVERY__BOGUS", "1")],
            &["environment variable CLIENTELE_DELIVERY__BOGUS", "`delivery.bogus`"],
            &["CLIENTELE_LISTEN"],
        );
        let without_admin_token = MINIMAL.replace("admin_token = \"admin\"\n", "");
        assert_error(
            &without_admin_token,
            &[],
            &["test.toml", "`admin_token`", "missing", "CLIENTELE_ADMIN_TOKEN"],
            &["`listen`"],
        );
        assert_error(
            &without_admin_token,
            &[("CLIENTELE_MAX_BODY_BYTES", "5")],
            &["test.toml", "`admin_token`", "missing"],
            &["`listen`", "CLIENTELE_MAX_BODY_BYTES"],
        );
        assert_error(
            MINIMAL,
            &[("CLIENTELE_LISTEN", "localhost")],
            &["environment variable CLIENTELE_LISTEN", "`listen`"],
            &["test.toml"],
        );
        assert_error(
            &two_sources("rate_limit = \"often\"\n"),
            &[],
            &["test.toml", "`sources[1].rate_limit`"],
            &[],
        );
        assert_error(
            &format!("{MINIMAL}\n[delivery]\nretry_schedule = [\"5s\", 5]\n"),
            &[("CLIENTELE_DELIVERY__TIMEOUT", "3s")],
            &["test.toml", "`delivery.retry_schedule[1]`"],
            &["CLIENTELE_DELIVERY__TIMEOUT"],
        );
    }

    #[test]
    fn a_syntax_error_names_its_own_line() {
        let err = load("x = 1\nadmin_token = \"a\"\nadmin_token = \"b\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3, `admin_token`"), "{err}");
    }

    #[test]
    fn no_error_shows_a_secret() {
        let secret = "S3CRET-VALUE";
        let tokens = "tokens = [\"t1\", \"t2\"]";
        let cases = [
            MINIMAL.replace("[\"t1\", \"t2\"]", &format!("\"{secret}\"")),
            MINIMAL.replace("\"t2\"", &format!("[\"{secret}\"]")),
            MINIMAL.replace("\"t1\"", &format!("\"{secret}\", 5")),
            MINIMAL.replace("\"admin\"", "8675309"),
            MINIMAL.replace("\"admin\"", &format!("[\"{secret}\"]")),
            MINIMAL.replace("\"admin\"", &format!("{{ value = \"{secret}\" }}")),
        ];
        for text in cases {
            assert_error(&text, &[], &["`"], &[secret, "8675309"]);
        }
        // Read through tokens_env, whatever else is wrong.
        let from_env = MINIMAL.replace(tokens, "tokens_env = \"CLIENTELE_T\"");
        let cases = [
            from_env.replace("timezone", "bogus = 1\ntimezone"),
            from_env.replace("America/Los_Angeles", "Mars/Olympus"),
            from_env.replace("[[sources]]", "[sources]"),
        ];
        for text in cases {
            assert_error(&text, &[("CLIENTELE_T", secret)], &["`"], &[secret]);
        }
        let named_like_a_key = MINIMAL
            .replace("[[sources]]", "[sources]")
            .replace(tokens, "tokens_env = \"CLIENTELE_LISTEN\"");
        assert_error(&named_like_a_key, &[("CLIENTELE_LISTEN", secret)], &["`"], &[secret]);
    }

    #[test]
    fn secrets_do_not_show_in_debug_or_store_urls() {
        let config = load(MINIMAL, &[]).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("t1") && !debug.contains("admin\""), "{debug}");
        let url = StoreUrl::Postgres("postgres://app:hunter2@db:5432/c".into());
        assert_eq!(url.to_string(), "postgres://app@db:5432/c");
    }

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
                trust_forwarded_proto: false,
            }
        );
        let err = load(&format!("{MINIMAL}\n[http]\nbody_timeout = \"0s\"\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("http.body_timeout"), "{err}");
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
