//! The store's URL (`store`): the embedded SQLite file or a PostgreSQL
//! server, and the form of it that logs may show.

use std::fmt;
use std::path::PathBuf;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreUrl {
    /// Reads `store`'s value, by its scheme.
    pub(super) fn parse(text: String, invalid: &impl Fn(&str, String) -> ConfigError) -> Result<Self, ConfigError> {
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(invalid("store", "needs a file path after sqlite://".to_owned()));
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(path)))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(text))
        } else {
            Err(invalid(
                "store",
                "must start with sqlite:// (embedded) or postgres://".to_owned(),
            ))
        }
    }
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
}
