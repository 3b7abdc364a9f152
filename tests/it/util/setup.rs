//! [`Setup`]: the configuration a test starts Clientele with, built as a
//! TOML table by typed methods rather than by joining strings.
//!
//! The base (see [`Setup::new`]) is what every test shares: an admin token,
//! a 64 KiB body limit, three sources (`vagaro`, `clientele`, `treez`, with
//! the tokens of `util`), and loopback allowed as a delivery destination
//! (the suite's subscribers listen on `127.0.0.1`; SPEC §16). A test states
//! only what it changes, and where: a key of a named source, of `[delivery]`,
//! of `[http]`, or at the top. The store is added last, by the method that
//! starts the app or writes the file, from the directory it keeps its data
//! in. A test that moves time gives it a simulated clock
//! ([`Setup::clock`]), which no configuration key sets.

use std::path::Path;

use clientele::clock::Clock;
use clientele::config::Config;
use toml::{Table, Value};

use super::{ADMIN, CLIENTELE_TOKEN, TREEZ_TOKEN, TestApp, VAGARO_TOKEN, postgres, proxy, store_url};

/// The configuration of a test's Clientele; see the module's paragraph.
#[derive(Clone, Debug)]
pub struct Setup {
    config: Table,
    clock: Clock,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    /// The suite's base configuration, without a store.
    pub fn new() -> Self {
        let source = |name: &str, tokens: &[&str]| {
            let mut source = Table::new();
            source.insert("name".into(), name.into());
            source.insert("kind".into(), name.into());
            source.insert("tokens".into(), tokens.to_vec().into());
            source.insert("default_country".into(), "US".into());
            Value::Table(source)
        };
        let mut treez = source("treez", &[TREEZ_TOKEN, "treez-next-token"]);
        treez
            .as_table_mut()
            .unwrap()
            .insert("timezone".into(), "America/Los_Angeles".into());
        let mut config = Table::new();
        config.insert("listen".into(), "127.0.0.1:0".into());
        config.insert("admin_token".into(), ADMIN.into());
        config.insert("max_body_bytes".into(), 65536.into());
        config.insert(
            "sources".into(),
            Value::Array(vec![
                source("vagaro", &[VAGARO_TOKEN]),
                source("clientele", &[CLIENTELE_TOKEN]),
                treez,
            ]),
        );
        let mut setup = Self {
            config,
            clock: Clock::system(),
        };
        setup = setup.delivery("allow_private", vec!["127.0.0.1/32"]);
        setup
    }

    /// The clock retention reads (the system's unless set).
    pub fn clock(mut self, clock: &Clock) -> Self {
        self.clock = clock.clone();
        self
    }

    /// Sets a top-level key (`log_format`, `max_body_bytes`, …).
    pub fn setting(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Sets `key` of the table `[table]`, creating the table if absent.
    pub fn table_setting(mut self, table: &str, key: &str, value: impl Into<Value>) -> Self {
        let table = self
            .config
            .entry(table)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("`{table}` is a table"));
        table.insert(key.into(), value.into());
        self
    }

    /// Sets a key of `[delivery]`: `allow_private` replaces the suite's
    /// loopback allowance.
    pub fn delivery(self, key: &str, value: impl Into<Value>) -> Self {
        self.table_setting("delivery", key, value)
    }

    /// `[delivery] retry_schedule`: the waits before each retry.
    pub fn delivery_schedule(self, waits: &[&str]) -> Self {
        self.delivery("retry_schedule", waits.to_vec())
    }

    /// `[delivery] timeout`: how long one attempt may take.
    pub fn delivery_timeout(self, timeout: &str) -> Self {
        self.delivery("timeout", timeout)
    }

    /// Sets a key of `[http]` (`header_timeout`, `body_timeout`, …).
    pub fn http(self, key: &str, value: impl Into<Value>) -> Self {
        self.table_setting("http", key, value)
    }

    /// Sets `key` of the source named `source` (`account`, `rate_limit`,
    /// `auth_header`, `allow_ips`, `tokens`, even `name` to rename it).
    /// Panics if there is no such source.
    pub fn source_setting(mut self, source: &str, key: &str, value: impl Into<Value>) -> Self {
        let sources = self.config["sources"].as_array_mut().expect("a sources array");
        let table = sources
            .iter_mut()
            .filter_map(Value::as_table_mut)
            .find(|s| s.get("name").and_then(Value::as_str) == Some(source))
            .unwrap_or_else(|| panic!("no source named {source:?} in the test configuration"));
        table.insert(key.into(), value.into());
        self
    }

    /// Adds a source `name` of `kind`, in the US and without tokens (set
    /// them with [`source_setting`](Self::source_setting)).
    pub fn source(mut self, name: &str, kind: &str) -> Self {
        let mut source = Table::new();
        source.insert("name".into(), name.into());
        source.insert("kind".into(), kind.into());
        source.insert("default_country".into(), "US".into());
        self.config["sources"]
            .as_array_mut()
            .expect("a sources array")
            .push(Value::Table(source));
        self
    }

    /// The configuration as TOML, on the store of `dir`: for a file the real
    /// binary reads.
    pub fn config_text(&self, dir: &Path) -> String {
        self.text_on(&store_url(dir))
    }

    /// The configuration, parsed as Clientele parses it, on the store of
    /// `dir`.
    pub fn config(&self, dir: &Path) -> Config {
        self.parse(&self.config_text(dir))
    }

    fn text_on(&self, store: &str) -> String {
        let mut config = self.config.clone();
        config.insert("store".into(), store.into());
        toml::to_string(&config).expect("the test configuration is TOML")
    }

    /// Starts the app on a store of its own, in a temporary directory that
    /// lives as long as the app ([`TestApp::stop`] hands it over).
    pub async fn spawn(self) -> TestApp {
        let temp = tempfile::tempdir().expect("a temp dir");
        let mut app = self.spawn_in(temp.path()).await;
        app.keep(temp);
        app
    }

    /// Starts the app on the store of `dir`, which outlives it: for
    /// restarts, and for a second instance beside a running one.
    pub async fn spawn_in(self, dir: &Path) -> TestApp {
        TestApp::serve(dir, self.config(dir)).await
    }

    /// Starts an app on the Postgres store of `dir` that reaches the
    /// database through `proxy`.
    pub async fn spawn_behind(self, proxy: &proxy::Proxy, dir: &Path) -> TestApp {
        let text = self.text_on(&postgres::url_via(dir, proxy.address()));
        TestApp::serve(dir, self.parse(&text)).await
    }

    /// Rebuilds the directory of the store of `dir` (`clientele rebuild`)
    /// with this configuration.
    pub async fn rebuild(&self, dir: &Path) -> clientele::store::Rebuilt {
        clientele::rebuild::command(&self.config(dir)).await.expect("a rebuild")
    }

    /// `text` as Clientele parses it, with this setup's clock.
    fn parse(&self, text: &str) -> Config {
        let config =
            Config::from_toml("test", text, std::iter::empty()).unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        Config {
            clock: self.clock.clone(),
            ..config
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_setting_lands_in_the_named_source_only() {
        let text = Setup::new()
            .source_setting("treez", "account", "shop")
            .delivery_schedule(&["10ms"])
            .text_on("sqlite:///nowhere/clientele.db");
        let table: Table = text.parse().expect("TOML");
        let sources = table["sources"].as_array().unwrap();
        let accounts: Vec<Option<&Value>> = sources.iter().map(|s| s.get("account")).collect();
        assert_eq!(accounts, [None, None, Some(&Value::from("shop"))], "{text}");
        assert_eq!(table["delivery"]["retry_schedule"], Value::from(vec!["10ms"]));
        assert_eq!(table["delivery"]["allow_private"], Value::from(vec!["127.0.0.1/32"]));
    }
}
