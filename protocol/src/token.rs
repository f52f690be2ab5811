//! Short-lived tokens between the API and agents: HS256 JWTs signed with a
//! shared secret. The audience says who may accept a token (`dcs-agent` or
//! `dcs-api`), so a token one side issued cannot be replayed against itself;
//! a minute of validity bounds replay from a captured request.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Issuer named in the tokens the API signs for agents.
pub const API_ISSUER: &str = "dcs-api";
/// Issuer named in the tokens agents sign for the API.
pub const AGENT_ISSUER: &str = "dcs-agent";
/// Audience of tokens the API presents to agents.
pub const AGENT_AUDIENCE: &str = "dcs-agent";
/// Audience of tokens agents present to the API.
pub const API_AUDIENCE: &str = "dcs-api";
/// Lifetime of a token.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Shortest secret accepted: HS256 wants at least 256 bits.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who signed: `dcs-api` or `dcs-agent`.
    pub iss: String,
    /// The agent's node name (both directions).
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the shared agent secret must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The shared secret, as signing and checking keys; never printed.
#[derive(Clone)]
pub struct SharedSecret {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SharedSecret {
    /// From the secret's bytes (surrounding whitespace, as in a file with a
    /// final newline, is ignored).
    pub fn new(bytes: Vec<u8>) -> Result<Self, TokenError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(TokenError::WeakSecret);
        }
        let invalid = |e: jsonwebtoken::errors::Error| TokenError::Invalid(e.to_string());
        Ok(Self {
            encoding: EncodingKey::from_secret(trimmed).map_err(invalid)?,
            decoding: DecodingKey::from_secret(trimmed).map_err(invalid)?,
        })
    }

    /// Signs a token for `audience`, about `subject` (a node name).
    pub fn sign(&self, issuer: &str, audience: &str, subject: &str) -> String {
        self.sign_at(issuer, audience, subject, chrono::Utc::now().timestamp())
    }

    /// Signs a token issued at `now` (Unix seconds): the verifier's time,
    /// when the signer has learnt that its own clock is off.
    pub fn sign_at(&self, issuer: &str, audience: &str, subject: &str, now: i64) -> String {
        let claims = Claims {
            iss: issuer.to_string(),
            sub: subject.to_string(),
            aud: audience.to_string(),
            iat: now,
            exp: now + TOKEN_TTL.as_secs() as i64,
        };
        // HS256 over a valid key cannot fail to encode.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }

    /// Checks signature (HS256 only), expiry and audience.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud", "sub", "iss"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> SharedSecret {
        SharedSecret::new(vec![byte; 40]).unwrap()
    }

    #[test]
    fn round_trip_and_refusals() {
        let s = secret(b'a');
        let token = s.sign("dcs-api", AGENT_AUDIENCE, "node-1");
        let claims = s.verify(&token, AGENT_AUDIENCE).unwrap();
        assert_eq!(claims.sub, "node-1");
        assert!(s.verify(&token, API_AUDIENCE).is_err(), "wrong audience");
        assert!(
            secret(b'b').verify(&token, AGENT_AUDIENCE).is_err(),
            "wrong key"
        );
        let mut tampered = token.clone();
        tampered.push('x');
        assert!(s.verify(&tampered, AGENT_AUDIENCE).is_err());
        assert_eq!(
            SharedSecret::new(b"short".to_vec()).unwrap_err(),
            TokenError::WeakSecret
        );
        assert!(!format!("{s:?}").contains("aaaa"));
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        // header {"alg":"none","typ":"JWT"}
        let now = chrono::Utc::now().timestamp();
        let body = format!(
            r#"{{"iss":"x","sub":"n","aud":"dcs-agent","iat":{now},"exp":{}}}"#,
            now + 60
        );
        use std::fmt::Write;
        let b64 = |data: &[u8]| {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let n =
                    chunk.iter().fold(0u32, |a, &b| (a << 8) | b as u32) << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        };
        let token = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(body.as_bytes())
        );
        assert!(secret(b'a').verify(&token, AGENT_AUDIENCE).is_err());
    }
}
