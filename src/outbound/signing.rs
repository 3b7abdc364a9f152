//! Standard Webhooks signatures: `webhook-signature: v1,<base64>` where the
//! base64 is an HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
//! keyed with the subscription secret (`whsec_` + base64 of the key bytes,
//! or, without the prefix, the secret's own bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// The key bytes of a secret; `None` for a `whsec_` secret that is not
/// valid base64.
pub fn key(secret: &str) -> Option<Vec<u8>> {
    match secret.strip_prefix(PREFIX) {
        Some(encoded) => STANDARD.decode(encoded).ok().filter(|k| !k.is_empty()),
        None => Some(secret.as_bytes().to_vec()),
    }
}

/// A new secret: 24 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
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
    fn generated_secrets_are_distinct_whsec_keys() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), 24);
    }
}
