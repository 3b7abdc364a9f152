//! Standard Webhooks signatures: `webhook-signature: v1,<base64>` where the
//! base64 is an HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
//! keyed with the subscription secret (`whsec_` + base64 of the key bytes,
//! or, without the prefix, the secret's own bytes). A secret given to a new
//! subscription must hold [`MIN_KEY_BYTES`] of key (SPEC §16).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The fewest key bytes a subscription secret may hold: "Subscription
/// secrets are at least 24 random bytes" (SPEC §16).
pub const MIN_KEY_BYTES: usize = 24;

/// Why a secret cannot key a new subscription. Never holds the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret: whsec_ must be followed by base64")]
    NotBase64,
    #[error(
        "secret must hold at least {MIN_KEY_BYTES} bytes of key (whsec_ + the base64 of {MIN_KEY_BYTES} random bytes, or a raw secret of {MIN_KEY_BYTES} bytes); this one holds {0}"
    )]
    TooShort(usize),
}

/// The key bytes of a secret; `None` for a `whsec_` secret that is not
/// valid base64.
pub fn key(secret: &str) -> Option<Vec<u8>> {
    match secret.strip_prefix(PREFIX) {
        Some(encoded) => STANDARD.decode(encoded).ok().filter(|k| !k.is_empty()),
        None => Some(secret.as_bytes().to_vec()),
    }
}

/// Checks a secret given for a new subscription.
pub fn check(secret: &str) -> Result<(), SecretError> {
    let key = key(secret).ok_or(SecretError::NotBase64)?;
    if key.len() < MIN_KEY_BYTES {
        return Err(SecretError::TooShort(key.len()));
    }
    Ok(())
}

/// A new secret: [`MIN_KEY_BYTES`] random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; MIN_KEY_BYTES];
    getrandom::fill(&mut key).expect("the operating system provides random bytes");
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header value.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_without_the_prefix_is_raw_bytes() {
        assert_eq!(key("plain-secret").unwrap(), b"plain-secret");
        assert_eq!(key("whsec_!!!"), None);
    }

    #[test]
    fn generated_secrets_are_distinct_whsec_keys_of_24_bytes() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), 24);
        assert_eq!(check(&a), Ok(()));
    }

    #[test]
    fn secrets_with_fewer_than_24_bytes_of_key_are_refused() {
        let whsec = |bytes: &[u8]| format!("{PREFIX}{}", STANDARD.encode(bytes));
        assert_eq!(check("x"), Err(SecretError::TooShort(1)));
        assert_eq!(check("whsec_eA=="), Err(SecretError::TooShort(1)));
        assert_eq!(check(&"k".repeat(23)), Err(SecretError::TooShort(23)));
        assert_eq!(check(&whsec(&[7; 23])), Err(SecretError::TooShort(23)));
        assert_eq!(check("whsec_"), Err(SecretError::NotBase64));
        assert_eq!(check("whsec_!!!"), Err(SecretError::NotBase64));
        assert_eq!(check(&"k".repeat(24)), Ok(()));
        assert_eq!(check(&whsec(&[7; 24])), Ok(()));
        let message = check("whsec_eA==").unwrap_err().to_string();
        assert!(
            message.starts_with("secret ") && message.contains("24 bytes"),
            "{message}"
        );
        assert!(!message.contains("eA=="), "{message}");
    }
}
