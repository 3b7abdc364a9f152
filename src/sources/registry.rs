//! The sources an instance serves right now (SPEC §9): those of the
//! configuration file and those created through the API, with their
//! tokens (as digests), pause state and rate limiters.
//!
//! The ingest path reads a snapshot of it (one `Arc` clone under a read
//! lock) instead of asking the store. The snapshot is rebuilt from the
//! store when the store's `sources_version` moves: at once on the
//! instance that made a change ([`Registry::reload`]), and on every other
//! instance within [`POLL`] ([`Registry::run`]). The same background task
//! flushes the delivery counts behind each source's `stats` and releases
//! the deliveries a source held while paused (`super::held`).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::HeaderName;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::tz::TimeZone;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::{Kind, SourceSettings};
use crate::config::{IpRange, Source};
use crate::model::{Country, UtcMillis};
use crate::outbound::signing;
use crate::store::sources::{SourceSpec, StoredSource, Usage, hour_of};
use crate::store::{Store, StoreError};

/// How often each instance looks whether the sources changed.
pub const POLL: Duration = Duration::from_millis(500);
/// How often the delivery counts are added to the store.
const FLUSH: Duration = Duration::from_secs(2);
/// Milliseconds in an hour, the counts' bucket.
const HOUR_MS: i64 = 3_600_000;

/// Where a source is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Managed {
    /// The configuration file: read-only through the API.
    Config,
    Api,
}

/// How a source's deliveries are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// One of its tokens, in its header.
    Token,
    /// A Standard Webhooks signature, keyed with one of its `whsec_` secrets.
    StandardWebhooks,
}

impl Verify {
    pub const STANDARD_WEBHOOKS: &str = "standard-webhooks";
}

/// One of a live source's tokens.
pub struct LiveToken {
    pub id: String,
    digest: [u8; 32],
    pub expires_at: Option<UtcMillis>,
    /// The HMAC key of a Standard Webhooks secret.
    key: Option<Vec<u8>>,
}

/// A source as the ingest path uses it.
pub struct LiveSource {
    pub source: Source,
    pub managed: Managed,
    pub enabled: bool,
    pub verify: Verify,
    pub tokens: Vec<LiveToken>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl LiveSource {
    /// Takes one delivery from the source's rate limit; `false` when none
    /// is left. A source without a limit always has one.
    pub fn take(&self) -> bool {
        self.limiter.as_ref().is_none_or(|limiter| limiter.check().is_ok())
    }

    /// The id of the token `presented` is, in time independent of which
    /// (or whether) one matches; expired tokens never match.
    pub fn token(&self, presented: &str, now: UtcMillis) -> Option<&str> {
        let presented = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for token in &self.tokens {
            let matches: bool = token.digest.ct_eq(presented.as_slice()).into();
            if matches && token.expires_at.is_none_or(|at| at > now) {
                found = Some(token.id.as_str());
            }
        }
        found
    }

    /// The HMAC keys of its unexpired Standard Webhooks secrets, with the
    /// token ids.
    pub fn keys(&self, now: UtcMillis) -> impl Iterator<Item = (&str, &[u8])> {
        self.tokens
            .iter()
            .filter(move |t| t.expires_at.is_none_or(|at| at > now))
            .filter_map(|t| Some((t.id.as_str(), t.key.as_deref()?)))
    }
}

/// A field of a source's settings that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> Invalid {
    Invalid {
        field,
        problem: problem.into(),
    }
}

/// Checks a source name: a URL segment of letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "must be 1 to 64 letters, digits, '-' or '_' (it is a URL segment)",
        ))
    }
}

/// The source that `spec` describes, or the first field it cannot use.
/// The same rules as the configuration file's.
pub fn build(name: &str, spec: &SourceSpec) -> Result<(Source, Verify), Invalid> {
    check_name(name)?;
    let kind = match spec.kind.as_str() {
        "vagaro" => Kind::Vagaro,
        "treez" => Kind::Treez,
        "clientele" => Kind::Clientele,
        _ => return Err(invalid("kind", "must be vagaro, treez or clientele")),
    };
    let verify = match spec.verify.as_deref() {
        None | Some("token") => Verify::Token,
        Some(Verify::STANDARD_WEBHOOKS) if kind == Kind::Clientele => Verify::StandardWebhooks,
        Some(Verify::STANDARD_WEBHOOKS) => {
            return Err(invalid("verify", "standard-webhooks is for the clientele kind only"));
        }
        Some(_) => return Err(invalid("verify", "must be token or standard-webhooks")),
    };
    let default_country = spec
        .default_country
        .as_deref()
        .map(|c| {
            Country::parse(c)
                .ok_or_else(|| invalid("defaultCountry", "must be an ISO 3166-1 alpha-2 code such as \"US\""))
        })
        .transpose()?;
    let timezone = match spec.timezone.as_deref() {
        None => TimeZone::UTC,
        Some(zone) => TimeZone::get(zone)
            .map_err(|_| invalid("timezone", "must be an IANA time zone such as \"America/Los_Angeles\""))?,
    };
    let account = spec.account.clone().filter(|a| !a.trim().is_empty());
    if account.as_deref().is_some_and(|a| a.contains(':')) {
        return Err(invalid("account", "must not contain ':' (it is part of customer ids)"));
    }
    let allow_ips = spec
        .allow_ips
        .iter()
        .map(|s| {
            IpRange::parse(s).ok_or_else(|| invalid("allowIps", format!("{s:?} is not an IP address or CIDR block")))
        })
        .collect::<Result<_, _>>()?;
    if spec.rate_limit == Some(0) {
        return Err(invalid("rateLimit", "must be at least 1 (per second)"));
    }
    let auth_header = spec
        .auth_header
        .as_deref()
        .map(|h| HeaderName::try_from(h).map_err(|_| invalid("authHeader", "is not a header name")))
        .transpose()?;
    let source = Source {
        kind,
        settings: SourceSettings {
            name: name.to_owned(),
            default_country,
            timezone,
            account,
        },
        tokens: Vec::new(),
        auth_header,
        allow_ips,
        rate_limit: spec.rate_limit,
    };
    Ok((source, verify))
}

/// The settings of a configuration file's source, as the API shows them.
pub fn spec_of(source: &Source) -> SourceSpec {
    SourceSpec {
        kind: source.kind.as_str().to_owned(),
        verify: None,
        default_country: source.settings.default_country.map(|c| c.as_str().to_owned()),
        timezone: source.settings.timezone.iana_name().map(str::to_owned),
        account: source.settings.account.clone(),
        allow_ips: Vec::new(),
        rate_limit: source.rate_limit,
        auth_header: source.auth_header.as_ref().map(|h| h.as_str().to_owned()),
    }
}

/// The SHA-256 of a token or key, hex: how they are kept.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A source's rate limiter: the one it had when its limit did not change
/// (with what it has counted), else a new one.
fn limiter(old: &Snapshot, name: &str, rate: Option<u32>) -> Option<Arc<DefaultDirectRateLimiter>> {
    let rate = NonZeroU32::new(rate?)?;
    match old.sources.get(name) {
        Some(live) if live.source.rate_limit == Some(rate.get()) => live.limiter.clone(),
        _ => Some(Arc::new(RateLimiter::direct(Quota::per_second(rate)))),
    }
}

struct Snapshot {
    version: Option<i64>,
    sources: HashMap<String, Arc<LiveSource>>,
}

/// Deliveries counted since the last flush.
#[derive(Default)]
struct Counts {
    /// By source, hour (as hours since 1970, written out at the flush) and
    /// outcome.
    counts: HashMap<(String, i64, &'static str), u64>,
    last_delivery: HashMap<String, UtcMillis>,
    tokens_used: HashMap<String, UtcMillis>,
}

pub struct Registry {
    store: Arc<dyn Store>,
    config: Vec<Source>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Sources with held deliveries not applied yet: new deliveries wait
    /// behind them, so that a source's deliveries apply in arrival order.
    holding: RwLock<HashSet<String>>,
    counts: Mutex<Counts>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Registry {
    /// The registry of `config`'s sources and the store's, read now.
    pub async fn load(store: Arc<dyn Store>, config: Vec<Source>) -> Result<Arc<Self>, StoreError> {
        let registry = Arc::new(Self {
            store,
            config,
            snapshot: RwLock::new(Arc::new(Snapshot {
                version: None,
                sources: HashMap::new(),
            })),
            holding: RwLock::new(HashSet::new()),
            counts: Mutex::new(Counts::default()),
            reloading: tokio::sync::Mutex::new(()),
        });
        registry.reload().await?;
        let holding = registry.store.holding().await?;
        registry.holding.write().expect("holding lock").extend(holding);
        Ok(registry)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn get(&self, name: &str) -> Option<Arc<LiveSource>> {
        self.snapshot.read().expect("registry lock").sources.get(name).cloned()
    }

    /// Every source, by name.
    pub fn all(&self) -> Vec<Arc<LiveSource>> {
        let snapshot = self.snapshot.read().expect("registry lock").clone();
        let mut all: Vec<_> = snapshot.sources.values().cloned().collect();
        all.sort_by(|a, b| a.source.name().cmp(b.source.name()));
        all
    }

    /// The first source of the configuration file.
    pub fn first_config(&self) -> Option<&Source> {
        self.config.first()
    }

    /// Reads the sources that changed since the last read, if the store's
    /// version moved: a change of one source costs one source's read,
    /// whatever the number of sources.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        let old = self.snapshot.read().expect("registry lock").clone();
        if old.version.is_some() && old.version == Some(self.store.sources_version().await?) {
            return Ok(());
        }
        let changed = self.store.stored_sources(old.version, None).await?;
        let mut sources = match old.version {
            Some(_) => old.sources.clone(),
            None => HashMap::with_capacity(self.config.len() + changed.sources.len()),
        };
        let is_config = |name: &str| self.config.iter().any(|s| s.name() == name);
        for name in &changed.deleted {
            if !is_config(name) {
                sources.remove(name);
            }
        }
        for stored in changed.sources {
            if is_config(&stored.name) {
                continue;
            }
            match self.live(stored, &old) {
                Some(live) => sources.insert(live.source.name().to_owned(), Arc::new(live)),
                None => continue,
            };
        }
        if old.version.is_none() {
            for source in &self.config {
                let live = self.config_live(source, &old);
                sources.insert(source.name().to_owned(), Arc::new(live));
            }
        }
        *self.snapshot.write().expect("registry lock") = Arc::new(Snapshot {
            version: Some(changed.version),
            sources,
        });
        Ok(())
    }

    /// A stored source as the ingest path uses it; `None` (logged) when
    /// its settings cannot be used.
    fn live(&self, stored: StoredSource, old: &Snapshot) -> Option<LiveSource> {
        let Ok((source, verify)) = build(&stored.name, &stored.spec) else {
            tracing::error!(source = %stored.name, "a stored source's settings cannot be used; it is not served");
            return None;
        };
        let tokens = stored
            .tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&t.digest, &mut digest).ok()?;
                Some(LiveToken {
                    id: t.id.clone(),
                    digest,
                    expires_at: t.expires_at,
                    key: t.secret.as_deref().and_then(signing::key),
                })
            })
            .collect();
        Some(LiveSource {
            limiter: limiter(old, &stored.name, source.rate_limit),
            source,
            managed: Managed::Api,
            enabled: stored.enabled,
            verify,
            tokens,
        })
    }

    fn config_live(&self, source: &Source, old: &Snapshot) -> LiveSource {
        let tokens = source
            .tokens
            .iter()
            .enumerate()
            .map(|(i, token)| LiveToken {
                id: format!("config_{i}"),
                digest: Sha256::digest(token.expose().as_bytes()).into(),
                expires_at: None,
                key: None,
            })
            .collect();
        LiveSource {
            limiter: limiter(old, source.name(), source.rate_limit),
            source: source.clone(),
            managed: Managed::Config,
            enabled: true,
            verify: Verify::Token,
            tokens,
        }
    }

    /// Whether new deliveries of `source` are held: it is paused, or
    /// deliveries it held wait to be applied.
    pub fn holds(&self, live: &LiveSource) -> bool {
        !live.enabled || self.holding.read().expect("holding lock").contains(live.source.name())
    }

    /// Notes that `source` holds deliveries.
    pub fn held(&self, source: &str) {
        self.holding.write().expect("holding lock").insert(source.to_owned());
    }

    pub(super) fn holding(&self) -> Vec<String> {
        self.holding.read().expect("holding lock").iter().cloned().collect()
    }

    pub(super) fn set_holding(&self, sources: Vec<String>) {
        *self.holding.write().expect("holding lock") = sources.into_iter().collect();
    }

    pub(super) fn released(&self, source: &str) {
        self.holding.write().expect("holding lock").remove(source);
    }

    /// Counts a delivery of `source` with this outcome, and the token it
    /// used; added to the store's hourly buckets by the next flush.
    pub fn count(&self, source: &str, outcome: &'static str, token: Option<&str>) {
        let now = UtcMillis::now();
        let hour = now.as_millisecond().div_euclid(HOUR_MS);
        let mut counts = self.counts.lock().expect("counts lock");
        *counts.counts.entry((source.to_owned(), hour, outcome)).or_default() += 1;
        counts.last_delivery.insert(source.to_owned(), now);
        if let Some(token) = token {
            counts.tokens_used.insert(token.to_owned(), now);
        }
    }

    /// Adds what was counted since the last flush to the store.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let counts = std::mem::take(&mut *self.counts.lock().expect("counts lock"));
        let usage = Usage {
            counts: counts
                .counts
                .into_iter()
                .map(|((source, hour, outcome), n)| {
                    let hour = hour_of(UtcMillis::from_millisecond(hour * HOUR_MS));
                    (source, hour, outcome.to_owned(), n)
                })
                .collect(),
            last_delivery: counts.last_delivery.into_iter().collect(),
            tokens_used: counts.tokens_used.into_iter().collect(),
        };
        if usage.is_empty() {
            return Ok(());
        }
        self.store.record_usage(usage).await
    }

    /// Until `stopped`: follows the store's changes, releases held
    /// deliveries and flushes the counts; flushes once more at the end.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut ticks = 0u64;
        let flush_every = (FLUSH.as_millis() / POLL.as_millis()).max(1) as u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopped.changed() => break,
            }
            ticks += 1;
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot read the sources; serving the last ones read");
            }
            if let Err(e) = super::held::release(&self).await {
                tracing::warn!(error = %e, "cannot release held deliveries now; retrying");
            }
            if ticks.is_multiple_of(flush_every)
                && let Err(e) = self.flush().await
            {
                tracing::warn!(error = %e, "cannot record delivery counts now; they are dropped");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "cannot record the last delivery counts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> SourceSpec {
        SourceSpec {
            kind: kind.to_owned(),
            ..SourceSpec::default()
        }
    }

    #[test]
    fn a_bad_field_is_named() {
        let bad = |spec: SourceSpec| build("shop", &spec).unwrap_err().field;
        assert_eq!(bad(spec("square")), "kind");
        assert_eq!(
            bad(SourceSpec {
                default_country: Some("XX".into()),
                ..spec("treez")
            }),
            "defaultCountry"
        );
        assert_eq!(
            bad(SourceSpec {
                timezone: Some("Mars/Olympus".into()),
                ..spec("treez")
            }),
            "timezone"
        );
        assert_eq!(
            bad(SourceSpec {
                allow_ips: vec!["10.0.0.0/33".into()],
                ..spec("treez")
            }),
            "allowIps"
        );
        assert_eq!(
            bad(SourceSpec {
                rate_limit: Some(0),
                ..spec("treez")
            }),
            "rateLimit"
        );
        assert_eq!(
            bad(SourceSpec {
                verify: Some("standard-webhooks".into()),
                ..spec("treez")
            }),
            "verify"
        );
        assert_eq!(build("a/b", &spec("treez")).unwrap_err().field, "name");
        assert!(
            build(
                "shop-1",
                &SourceSpec {
                    verify: Some("standard-webhooks".into()),
                    ..spec("clientele")
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn a_token_matches_by_digest_until_it_expires() {
        let now = UtcMillis::now();
        let (source, verify) = build("shop", &spec("treez")).unwrap();
        let token = |id: &str, secret: &str, expires_at| LiveToken {
            id: id.to_owned(),
            digest: Sha256::digest(secret.as_bytes()).into(),
            expires_at,
            key: None,
        };
        let live = LiveSource {
            source,
            managed: Managed::Api,
            enabled: true,
            verify,
            tokens: vec![token("tok_old", "old", Some(now)), token("tok_new", "new", None)],
            limiter: None,
        };
        assert_eq!(live.token("new", now), Some("tok_new"));
        assert_eq!(live.token("old", now), None, "expired");
        assert_eq!(live.token("ne", now), None);
        assert!(live.take(), "no limit");
    }
}
