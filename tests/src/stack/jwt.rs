//! Hand-made JWTs, so the tests can also make the tokens a JWT library
//! refuses to make (`alg: none`, tampered payloads, other algorithms):
//! base64url (no padding) and HMAC over the `base64` and `hmac` crates.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};

/// base64url without padding (RFC 7515 §2).
pub fn base64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// HMAC accepts keys of any length (longer ones are hashed first).
const ANY_KEY: &str = "HMAC takes a key of any length";

fn sign(mut mac: impl Mac, message: &[u8]) -> Vec<u8> {
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    sign(Hmac::<Sha256>::new_from_slice(key).expect(ANY_KEY), message)
}

pub fn hmac_sha384(key: &[u8], message: &[u8]) -> Vec<u8> {
    sign(Hmac::<Sha384>::new_from_slice(key).expect(ANY_KEY), message)
}

pub fn hmac_sha512(key: &[u8], message: &[u8]) -> Vec<u8> {
    sign(Hmac::<Sha512>::new_from_slice(key).expect(ANY_KEY), message)
}

/// `header.claims.signature`, signed as the header's `alg` says
/// (`HS256`, `HS384`, `HS512`; `none` gives an empty signature).
pub fn encode(key: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let signature = match header["alg"].as_str() {
        Some("HS256") => hmac_sha256(key, signing_input.as_bytes()),
        Some("HS384") => hmac_sha384(key, signing_input.as_bytes()),
        Some("HS512") => hmac_sha512(key, signing_input.as_bytes()),
        Some("none") => Vec::new(),
        other => panic!("jwt::encode cannot sign with {other:?}"),
    };
    format!("{signing_input}.{}", base64url(&signature))
}

/// An HS256 token.
pub fn hs256(key: &[u8], claims: &Value) -> String {
    encode(
        key,
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
    )
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The claims `dcs-api token` puts in a user token (issuer `dcs`,
/// audience `dcs-api`, the defaults), valid for an hour.
pub fn user_claims(sub: &str, role: &str, namespaces: &[&str]) -> Value {
    let now = now();
    serde_json::json!({
        "sub": sub, "role": role, "namespaces": namespaces,
        "iss": "dcs", "aud": "dcs-api",
        "iat": now, "nbf": now, "exp": now + 3600,
    })
}

/// The claims of a token between the API and an agent.
pub fn service_claims(issuer: &str, audience: &str, node: &str) -> Value {
    let now = now();
    serde_json::json!({"iss": issuer, "aud": audience, "sub": node, "iat": now, "exp": now + 60})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_tokens_use_correct_hmac_and_base64url() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha512(b"Jefe", b"what do ya want for nothing?")),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        // A key longer than the block is hashed first (RFC 4231, test case 6).
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
