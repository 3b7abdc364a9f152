//! Where outbound messages may go (SPEC §16): public addresses only, and
//! the non-public networks an operator lists in `[delivery] allow_private`.
//!
//! The address is checked when connecting, on what the name resolves to
//! then ([`GuardedResolver`], reqwest's DNS hook), so a name that answers
//! public once and private later (DNS rebinding) never reaches the private
//! address; an IP-literal host is not resolved and is checked by the
//! sender ([`super::send`]) before it connects. At subscription creation
//! the API refuses what can be refused without DNS ([`Guard::check_url`]).
//! A refusal says "destination not allowed" and nothing of what listens
//! there. Brokers (SPEC §15) are connected to by address: their hosts are
//! resolved and checked here ([`Guard::resolve`]), and the client libraries
//! are handed the allowed addresses only. [`Target`] reads a subscription
//! URL into the kind of destination it names, refusing a URL that lacks what
//! its kind needs; [`masked`] hides the credentials of a URL in every
//! listing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::brokers::{amqp, nats, redis};
use crate::config::IpRange;

/// The longest subscription URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("destination not allowed")]
    NotAllowed,
    #[error("url must be an http://, https://, nats://, amqp:// or redis:// URL")]
    Scheme,
    #[error("url must be at most {MAX_URL_BYTES} bytes")]
    TooLong,
    /// A broker URL without what its kind needs, or with what it does not
    /// take; says what, never the URL.
    #[error("url: {0}")]
    Shape(String),
}

/// The kind of destination a subscription URL names, with what sending to
/// it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http(Url),
    Nats(nats::Address),
    Amqp(amqp::Address),
    Redis(redis::Address),
}

impl Target {
    pub fn parse(url: &Url) -> Result<Self, Refused> {
        match url.scheme() {
            "http" | "https" => Ok(Target::Http(url.clone())),
            "nats" => nats::Address::parse(url).map(Target::Nats),
            "amqp" => amqp::Address::parse(url).map(Target::Amqp),
            "redis" => redis::Address::parse(url).map(Target::Redis),
            _ => Err(Refused::Scheme),
        }
    }
}

/// Which addresses may be called: public ones, and those in the operator's
/// `allow_private` networks.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_private: Arc<[IpRange]>,
}

impl Guard {
    pub fn new(allow_private: &[IpRange]) -> Self {
        Self {
            allow_private: allow_private.into(),
        }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allow_private.iter().any(|range| range.contains(ip))
    }

    /// Whether `url` may be a subscription's: a [`Target`] of at most
    /// [`MAX_URL_BYTES`], whose host, if an IP address, is allowed. A name
    /// is checked when connecting, on what it then resolves to.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(Refused::TooLong);
        }
        Target::parse(url)?;
        self.check_host(url)
    }

    /// The allowed addresses `host` resolves to now (an IP literal is
    /// itself), for destinations that connect by address: the brokers. A
    /// host with none is refused, saying nothing of what listens there.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| "cannot resolve the host".to_owned())?
                .collect(),
        };
        let allowed: Vec<SocketAddr> = found.into_iter().filter(|addr| self.allows(addr.ip())).collect();
        if allowed.is_empty() {
            return Err(Refused::NotAllowed.to_string());
        }
        Ok(allowed)
    }

    /// Whether the host of `url`, if an IP address, is allowed; a name
    /// passes (the resolver checks it).
    pub fn check_host(&self, url: &Url) -> Result<(), Refused> {
        // The URL parser writes every IPv4 spelling (`2130706433`, `0x7f.1`,
        // `0177.0.0.1`) dotted, and IPv6 in brackets.
        let Some(host) = url.host_str() else {
            return Err(Refused::NotAllowed);
        };
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) if !self.allows(ip) => Err(Refused::NotAllowed),
            _ => Ok(()),
        }
    }
}

/// An IPv4 address written as IPv6 (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) is
/// judged as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let octets = v6.octets();
    let embedded = match s {
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _] => Some([octets[12], octets[13], octets[14], octets[15]]),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some([octets[12], octets[13], octets[14], octets[15]]),
        [0x2002, ..] => Some([octets[2], octets[3], octets[4], octets[5]]),
        _ => None,
    };
    // `::` and `::1` are IPv6's own unspecified and loopback addresses.
    match embedded {
        Some(v4) if !matches!(s, [0, 0, 0, 0, 0, 0, 0, 0 | 1]) => IpAddr::V4(Ipv4Addr::from(v4)),
        _ => ip,
    }
}

/// Whether `ip` is a public unicast address: not loopback, unspecified,
/// private (RFC 1918), shared (CGNAT), link-local (cloud metadata among
/// them), unique local, documentation, benchmarking, multicast, broadcast
/// or reserved.
fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(a == 0 // "this network", 0.0.0.0
                || a == 10
                || a == 127
                || (a == 100 && (64..128).contains(&b)) // CGNAT, 100.64/10
                || (a == 169 && b == 254) // link-local, metadata 169.254.169.254
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 0 && c == 2) // documentation
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || (a == 198 && b == 51 && c == 100) // documentation
                || (a == 203 && b == 0 && c == 113) // documentation
                || a >= 224) // multicast, reserved, broadcast
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6 == Ipv6Addr::UNSPECIFIED
                || v6 == Ipv6Addr::LOCALHOST
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7 (metadata fd00:ec2::254)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local, deprecated
                || (s[0] & 0xff00) == 0xff00 // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard, 100::/64
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local NAT64, 64:ff9b:1::/48
                || s[..6] == [0; 6]) // the rest of ::/96
        }
    }
}

/// reqwest's resolver with the [`Guard`] applied to what it answers: only
/// allowed addresses are connected to; a name with none is refused.
pub struct GuardedResolver {
    guard: Guard,
    lookup: Arc<dyn Resolve>,
}

impl GuardedResolver {
    /// Resolves with the system's resolver (`getaddrinfo`).
    pub fn new(guard: Guard) -> Self {
        Self::over(guard, Arc::new(SystemResolver))
    }

    fn over(guard: Guard, lookup: Arc<dyn Resolve>) -> Self {
        Self { guard, lookup }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let resolving = self.lookup.resolve(name);
        Box::pin(async move {
            let allowed: Vec<SocketAddr> = resolving.await?.filter(|addr| guard.allows(addr.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Refused::NotAllowed) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The system's resolver, as reqwest's default is.
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// `url` with the password of its credentials masked
/// (`https://user:***@host/…`), for listings; as given if it does not
/// parse or has none. A broker URL's lone user name is a token
/// (`nats://TOKEN@host/…`) and is masked too.
pub fn masked(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(mut parsed) if !parsed.username().is_empty() && !matches!(parsed.scheme(), "http" | "https") => {
            let _ = parsed.set_username("***");
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_in_every_spelling() {
        let guard = Guard::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!guard.allows(ip(refused)), "{refused}");
        }
        for public in [
            "8.8.8.8",
            "93.184.215.14",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(guard.allows(ip(public)), "{public}");
        }
    }

    #[test]
    fn allow_private_lets_its_networks_through_in_any_spelling() {
        let ranges = ["10.0.0.0/8", "127.0.0.1/32"].map(|r| IpRange::parse(r).unwrap());
        let guard = Guard::new(&ranges);
        assert!(guard.allows(ip("10.9.8.7")));
        assert!(guard.allows(ip("::ffff:127.0.0.1")));
        assert!(!guard.allows(ip("127.0.0.2")));
        assert!(!guard.allows(ip("192.168.0.1")));
    }

    #[test]
    fn urls_are_checked_without_dns_and_masked() {
        let guard = Guard::default();
        let check = |url: &str| guard.check_url(&Url::parse(url).unwrap());
        assert_eq!(check("http://2130706433/"), Err(Refused::NotAllowed));
        assert_eq!(check("http://0x7f.1/"), Err(Refused::NotAllowed));
        assert_eq!(check("gopher://example.com/"), Err(Refused::Scheme));
        assert_eq!(
            check(&format!("https://example.com/{}", "a".repeat(2048))),
            Err(Refused::TooLong)
        );
        assert_eq!(check("https://localhost/"), Ok(()), "a name is checked when connecting");
        assert_eq!(
            masked("https://user:pass@example.com/x"),
            "https://user:***@example.com/x"
        );
        assert_eq!(masked("https://example.com/x?token=1"), "https://example.com/x?token=1");
        assert_eq!(
            masked("amqp://clientele:s3cret@mq.example.com/%2f?exchange=x"),
            "amqp://clientele:***@mq.example.com/%2f?exchange=x"
        );
        assert_eq!(
            masked("redis://:s3cret@r.example.com/s"),
            "redis://:***@r.example.com/s"
        );
        assert_eq!(masked("nats://s3cret@n.example.com/p"), "nats://***@n.example.com/p");
    }

    #[test]
    fn broker_urls_name_their_kind_and_what_they_lack() {
        let guard = Guard::default();
        let check = |url: &str| guard.check_url(&Url::parse(url).unwrap());
        let shape = |url: &str| match check(url) {
            Err(Refused::Shape(what)) => what,
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(check("nats://nats.example.com/clientele"), Ok(()));
        assert_eq!(check("amqp://u:p@mq.example.com/%2f?exchange=customers"), Ok(()));
        assert_eq!(check("redis://r.example.com:6380/customers"), Ok(()));
        assert!(shape("nats://nats.example.com").contains("subject prefix"));
        assert!(shape("nats://nats.example.com/a..b").contains("subject prefix"));
        assert!(shape("nats://nats.example.com/a.>").contains("subject prefix"));
        assert!(shape("amqp://mq.example.com/").contains("exchange"));
        assert!(shape("amqp://mq.example.com/?exchange=").contains("exchange"));
        assert!(shape("redis://r.example.com/").contains("stream"));
        assert!(shape("redis://r.example.com/s?maxlen=1").contains("maxlen"));
        assert_eq!(check("nats://127.0.0.1/p"), Err(Refused::NotAllowed));
        assert_eq!(check("kafka://k.example.com/t"), Err(Refused::Scheme));
    }

    /// Answers each name with the next list of addresses.
    struct Scripted(Mutex<Vec<Vec<&'static str>>>);

    impl Resolve for Scripted {
        fn resolve(&self, _: Name) -> Resolving {
            let next = self.0.lock().unwrap().remove(0);
            let addrs: Vec<SocketAddr> = next.iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), 0)).collect();
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
        }
    }

    async fn resolve(resolver: &GuardedResolver) -> Result<Vec<IpAddr>, String> {
        match resolver.resolve("rebind.example".parse().unwrap()).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Each connection resolves again and checks what it gets: a name
    /// that answered public first and private later (DNS rebinding) does
    /// not reach the private address.
    #[tokio::test]
    async fn a_name_that_rebinds_to_a_private_address_is_refused_when_connecting() {
        let answers = vec![
            vec!["93.184.215.14"],
            vec!["127.0.0.1"],
            vec!["10.0.0.1", "93.184.215.14"],
        ];
        let resolver = GuardedResolver::over(Guard::default(), Arc::new(Scripted(Mutex::new(answers))));
        assert_eq!(resolve(&resolver).await, Ok(vec![ip("93.184.215.14")]));
        assert_eq!(resolve(&resolver).await, Err("destination not allowed".to_owned()));
        assert_eq!(
            resolve(&resolver).await,
            Ok(vec![ip("93.184.215.14")]),
            "only allowed addresses"
        );
    }
}
