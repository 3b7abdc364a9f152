//! Configuration: the TOML file of SPEC §2, overridden by `CLIENTELE_*`
//! environment variables, validated into typed settings.
//!
//! `main` loads it once; the HTTP layer reads the sources and tokens, the
//! store layer the store URL. Every error names the key at fault
//! (`sources[1].timezone`), where it was given (the file, or the
//! environment variable that set it) and what to do about it; no secret
//! ever reaches an error, a `Debug` or a log line.
//!
//! This module holds that engine (reading the file, applying the
//! environment, saying where a key was given, keeping secrets out of
//! messages) and the top-level keys; each section validates its own keys
//! in a file of its own: `http`, `store`, `sources`, `delivery`, `retention`, with the
//! values several of them read (durations, IP ranges) in `values`.

mod delivery;
mod http;
mod retention;
mod sources;
mod store;
mod values;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use self::retention::RawRetention;
use crate::clock::Clock;

pub use delivery::DeliverySettings;
pub use http::HttpSettings;
pub use retention::RetentionSettings;
pub use sources::Source;
pub use store::StoreUrl;
pub use values::IpRange;

/// The example configuration, committed as `clientele.example.toml`: what
/// `serve` runs when no `--config` is given.
pub const EXAMPLE: &str = include_str!("../../clientele.example.toml");

const ENV_PREFIX: &str = "CLIENTELE_";

/// The keys an environment variable may set to something other than a
/// string.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    pub retention: RetentionSettings,
    /// The clock retention reads: always the system's when read from a
    /// file and the environment (no key sets another); code that builds
    /// Clientele itself may set a simulated one ([`crate::clock`]).
    pub clock: Clock,
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
    sources: Vec<sources::RawSource>,
    #[serde(default)]
    delivery: delivery::RawDelivery,
    #[serde(default)]
    http: http::RawHttp,
    #[serde(default)]
    retention: RawRetention,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
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
        let store = StoreUrl::parse(store_text, &invalid)?;
        if admin_token.trim().is_empty() {
            return Err(invalid("admin_token", "must not be empty".to_owned()));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be at least 1".to_owned()));
        }
        let sources = sources::validate(self.sources, env, &invalid)?;
        let delivery = self.delivery.validate(&invalid)?;
        let http = self.http.validate(&invalid)?;
        let retention = self.retention.validate(&invalid)?;
        Ok(Config {
            retention,
            delivery,
            http,
            listen,
            store,
            admin_token: Secret(admin_token),
            max_body_bytes: self.max_body_bytes,
            log_format: self.log_format,
            sources,
            clock: Clock::system(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Country;
    use crate::sources::Kind;

    pub(super) fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml("test.toml", text, env)
    }

    pub(super) const MINIMAL: &str = r#"
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
}
