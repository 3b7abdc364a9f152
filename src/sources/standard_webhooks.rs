//! Standard Webhooks inbound (SPEC §9, `verify = "standard-webhooks"`):
//! a delivery is authentic when one of the `v1,` signatures of its
//! `webhook-signature` header is the HMAC-SHA256, keyed with one of the
//! source's secrets, of `{webhook-id}.{webhook-timestamp}.{body}`, and its
//! timestamp is within [`TOLERANCE`] of the server's clock. The math is
//! the outbound signer's (`crate::outbound::signing`); comparisons run in
//! constant time.

use subtle::ConstantTimeEq;

use crate::outbound::signing;

/// How far a delivery's `webhook-timestamp` may be from now, either way.
pub const TOLERANCE: i64 = 5 * 60;

/// Why a delivery is not authentic. Said to the sender as one `401`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("webhook-id, webhook-timestamp and webhook-signature are required")]
    Missing,
    #[error("webhook-timestamp is not within 5 minutes of now")]
    Timestamp,
    #[error("no webhook-signature matches")]
    Signature,
}

/// The signing headers of a delivery.
pub struct Signed<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signatures: &'a str,
}

impl<'a> Signed<'a> {
    pub fn new(id: Option<&'a str>, timestamp: Option<&'a str>, signatures: Option<&'a str>) -> Result<Self, Refused> {
        match (id, timestamp, signatures) {
            (Some(id), Some(timestamp), Some(signatures)) if !id.is_empty() => Ok(Self {
                id,
                timestamp,
                signatures,
            }),
            _ => Err(Refused::Missing),
        }
    }

    /// Checks the timestamp alone: before the body is read.
    pub fn timely(&self, now: i64) -> Result<i64, Refused> {
        let at: i64 = self.timestamp.trim().parse().map_err(|_| Refused::Timestamp)?;
        if (now - at).abs() > TOLERANCE {
            return Err(Refused::Timestamp);
        }
        Ok(at)
    }

    /// The index of the key that signed `body`, if one did.
    pub fn verify<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        now: i64,
        body: &[u8],
    ) -> Result<usize, Refused> {
        let at = self.timely(now)?;
        let body = String::from_utf8_lossy(body);
        let presented: Vec<&str> = self.signatures.split(' ').filter(|s| s.starts_with("v1,")).collect();
        let mut found = None;
        for (i, key) in keys.into_iter().enumerate() {
            let expected = signing::sign(key, self.id, at, &body);
            for candidate in &presented {
                if bool::from(expected.as_bytes().ct_eq(candidate.as_bytes())) {
                    found = Some(i);
                }
            }
        }
        found.ok_or(Refused::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_verifies_and_a_changed_body_does_not() {
        let key = signing::key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signed = Signed::new(
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some("v1,bm9ldHZhbGlk v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        )
        .unwrap();
        let other = b"another key".as_slice();
        assert_eq!(signed.verify([other, &key], 1614265330 + 299, body), Ok(1));
        assert_eq!(signed.verify([&key[..]], 1614265330, b"{}"), Err(Refused::Signature));
        assert_eq!(
            signed.verify([&key[..]], 1614265330 + 301, body),
            Err(Refused::Timestamp)
        );
        assert_eq!(
            signed.verify([&key[..]], 1614265330 - 301, body),
            Err(Refused::Timestamp)
        );
        assert!(Signed::new(Some("id"), None, Some("v1,x")).is_err());
    }
}
