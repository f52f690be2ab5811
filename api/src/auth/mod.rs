//! Who is calling: speakers and admins with JWT bearer tokens.
//!
//! The algorithm is pinned by configuration (HS256 with a secret, or
//! RS256/ES256 with a public key); a token whose header names any other
//! algorithm (`none` included) is refused. `exp`, `nbf`, `iss` and `aud`
//! are checked.

pub mod policy;
pub mod review_limit;

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::errors::ApiError;

/// What a caller may do, from the token's `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Own namespaces' containers, own registry prefix.
    Speaker,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub role: Role,
    /// Pod namespaces a speaker may see and snapshot.
    pub namespaces: Vec<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default)]
    pub namespaces: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0} needs {1}")]
    Missing(&'static str, &'static str),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the JWT secret must be at least 32 bytes")]
    WeakSecret,
}

/// The algorithm user tokens must be signed with: one of three, named in
/// upper case on the command line (any case accepted there, as always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC with a shared secret.
    #[value(name = "HS256")]
    Hs256,
    /// RSA, checked with a public key.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256, checked with a public key.
    #[value(name = "ES256")]
    Es256,
}

impl From<JwtAlgorithm> for Algorithm {
    fn from(a: JwtAlgorithm) -> Self {
        match a {
            JwtAlgorithm::Hs256 => Self::HS256,
            JwtAlgorithm::Rs256 => Self::RS256,
            JwtAlgorithm::Es256 => Self::ES256,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn key_error(path: &Path, e: jsonwebtoken::errors::Error) -> KeyError {
    KeyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Checks user tokens.
#[derive(Clone)]
pub struct JwtVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    issuer: String,
    audience: String,
    /// Built once: it holds sets of the accepted issuers, audiences and
    /// required claims, which each request would otherwise allocate.
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// `secret` for HS256; `public_key` (PEM) for RS256 and ES256.
    pub fn new(
        algorithm: JwtAlgorithm,
        secret: Option<&Path>,
        public_key: Option<&Path>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::Hs256 => {
                let path = secret.ok_or(KeyError::Missing("HS256", "a secret file"))?;
                let bytes = read(path)?;
                let bytes = bytes.trim_ascii();
                if bytes.len() < 32 {
                    return Err(KeyError::WeakSecret);
                }
                DecodingKey::from_secret(bytes).map_err(|e| key_error(path, e))?
            }
            JwtAlgorithm::Rs256 => {
                let path = public_key.ok_or(KeyError::Missing("RS256", "a public key file"))?;
                DecodingKey::from_rsa_pem(&read(path)?).map_err(|e| key_error(path, e))?
            }
            JwtAlgorithm::Es256 => {
                let path = public_key.ok_or(KeyError::Missing("ES256", "a public key file"))?;
                DecodingKey::from_ec_pem(&read(path)?).map_err(|e| key_error(path, e))?
            }
        };
        let algorithm: Algorithm = algorithm.into();
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Ok(Self {
            algorithm,
            key,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            validation,
        })
    }

    /// The caller of a bearer token, or why not.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_with_expiry(token)
            .map(|(principal, _)| principal)
    }

    /// The caller and the token's `exp` (Unix seconds): a WebSocket
    /// connection ends when its token expires.
    pub fn verify_with_expiry(&self, token: &str) -> Result<(Principal, i64), ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::unauthenticated(describe(e.kind())))?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(ApiError::unauthenticated("the token has no subject"));
        }
        let expires = claims.exp;
        Ok((
            Principal {
                sub: claims.sub,
                role: claims.role,
                namespaces: claims.namespaces,
            },
            expires,
        ))
    }
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token was issued by an issuer this service does not trust",
        ErrorKind::InvalidAudience => "the token is meant for another audience",
        ErrorKind::InvalidSignature => "the token's signature is invalid",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token is signed with an algorithm this service does not accept"
        }
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is malformed",
    }
}

/// Mints user tokens (`dcs-api token`), for local use and tests; in
/// production tokens come from the organisation's identity provider.
pub struct JwtSigner {
    algorithm: Algorithm,
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("JwtSigner")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtSigner {
    /// `secret` for HS256; `private_key` (PEM) for RS256 and ES256.
    pub fn new(
        algorithm: JwtAlgorithm,
        secret: Option<&Path>,
        private_key: Option<&Path>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        let key = match algorithm {
            JwtAlgorithm::Hs256 => {
                let path = secret.ok_or(KeyError::Missing("HS256", "a secret file"))?;
                let bytes = read(path)?;
                EncodingKey::from_secret(bytes.trim_ascii()).map_err(|e| key_error(path, e))?
            }
            JwtAlgorithm::Rs256 => {
                let path = private_key.ok_or(KeyError::Missing("RS256", "a private key file"))?;
                EncodingKey::from_rsa_pem(&read(path)?).map_err(|e| key_error(path, e))?
            }
            JwtAlgorithm::Es256 => {
                let path = private_key.ok_or(KeyError::Missing("ES256", "a private key file"))?;
                EncodingKey::from_ec_pem(&read(path)?).map_err(|e| key_error(path, e))?
            }
        };
        Ok(Self {
            algorithm: algorithm.into(),
            key,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    pub fn mint(&self, sub: &str, role: Role, namespaces: &[String], ttl: Duration) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            namespaces: namespaces.to_vec(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs() as i64,
            nbf: Some(now),
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key).unwrap_or_default()
    }
}

/// The token of an `Authorization: Bearer ...` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let other = dir.path().join("other");
        std::fs::write(&good, "g".repeat(40)).unwrap();
        std::fs::write(&other, "o".repeat(40)).unwrap();
        (dir, good, other)
    }

    #[test]
    fn the_auth_matrix() {
        let (_dir, good, other) = files();
        let verifier =
            JwtVerifier::new(JwtAlgorithm::Hs256, Some(&good), None, "dcs", "dcs-api").unwrap();
        let signer =
            JwtSigner::new(JwtAlgorithm::Hs256, Some(&good), None, "dcs", "dcs-api").unwrap();
        let ok = signer.mint(
            "alice",
            Role::Speaker,
            &["ws".into()],
            Duration::from_secs(60),
        );
        let principal = verifier.verify(&ok).unwrap();
        assert_eq!(principal.sub, "alice");
        assert_eq!(principal.namespaces, vec!["ws".to_string()]);

        let message = |token: &str| verifier.verify(token).unwrap_err().message;
        let wrong_key = JwtSigner::new(JwtAlgorithm::Hs256, Some(&other), None, "dcs", "dcs-api")
            .unwrap()
            .mint("alice", Role::Admin, &[], Duration::from_secs(60));
        assert_eq!(message(&wrong_key), "the token's signature is invalid");
        let wrong_issuer =
            JwtSigner::new(JwtAlgorithm::Hs256, Some(&good), None, "evil", "dcs-api")
                .unwrap()
                .mint("alice", Role::Admin, &[], Duration::from_secs(60));
        assert!(message(&wrong_issuer).contains("issuer"));
        let wrong_audience = JwtSigner::new(JwtAlgorithm::Hs256, Some(&good), None, "dcs", "other")
            .unwrap()
            .mint("alice", Role::Admin, &[], Duration::from_secs(60));
        assert!(message(&wrong_audience).contains("audience"));

        let now = chrono::Utc::now().timestamp();
        let key = EncodingKey::from_secret("g".repeat(40).as_bytes()).unwrap();
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub":"a","role":"admin","iss":"dcs","aud":"dcs-api","exp": now - 120}),
            &key,
        )
        .unwrap();
        assert_eq!(message(&expired), "the token has expired");
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                format!(
                    r#"{{"sub":"a","role":"admin","iss":"dcs","aud":"dcs-api","exp":{}}}"#,
                    now + 60
                )
            )
        );
        assert!(verifier.verify(&unsigned).is_err());
        assert!(verifier.verify("garbage").is_err());
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
