//! Standard Webhooks 1.0 signatures: HMAC-SHA256 over
//! `"{webhook-id}.{webhook-timestamp}.{body}"`, sent as `v1,<base64>`;
//! several signatures (during a secret rotation) are space-separated.
//! Secrets are `whsec_` + base64 of 24 to 64 random bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Bytes of a new secret.
const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid webhook secret: {0}")]
pub struct SecretError(&'static str);

/// A new random secret, unique per endpoint.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    crate::random::fill(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(PREFIX)
        .ok_or(SecretError("it must start with whsec_"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError("it is not base64"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(SecretError("it must hold 24 to 64 bytes"));
    }
    Ok(key)
}

/// `v1,<base64 HMAC>` for one secret.
pub fn sign(key: &[u8], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one signature per secret.
pub fn signature_header(secrets: &[&str], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| secret_key(s).ok())
        .map(|key| sign(&key, message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_checked_and_unique() {
        let a = generate_secret();
        assert!(secret_key(&a).is_ok());
        assert_ne!(a, generate_secret());
        assert!(secret_key("nope").is_err());
        assert!(secret_key("whsec_c2hvcnQ=").is_err());
        let header = signature_header(&[&a, &generate_secret()], "msg_1", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
    }
}
