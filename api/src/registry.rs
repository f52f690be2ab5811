//! The registry calls the API server makes itself: only deleting a
//! snapshot's manifest (`deleteSnapshot` and retention). Pushing is the
//! agents' work.
//!
//! Credentials come from a `dockerconfigjson` file, read at every delete so
//! that a rotated Secret is picked up. A registry that answers with a
//! Bearer challenge gets a token from its realm for the scope it asked for
//! (`repository:<path>:delete`). Answers are read only up to a few KiB:
//! a registry is not trusted to send small bodies.

use std::path::PathBuf;
use std::time::Duration;

use dcs_protocol::reference::Target;
use dcs_support::registry_credentials::{Credentials, CredentialsError, load_credentials};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

/// The largest token answer read from a realm.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// The largest error answer read from a registry (for its message); a
/// larger one is refused without its message.
const MAX_ERROR_ANSWER: usize = 64 * 1024;
/// The longest registry message repeated to a client.
const MAX_REASON: usize = 200;

/// How the API server reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// A `dockerconfigjson` file with credentials that may delete.
    pub credentials_file: Option<PathBuf>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

#[derive(Debug)]
pub struct Registries {
    http: reqwest::Client,
    settings: RegistrySettings,
}

/// What a registry did when asked to delete a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted (202 Accepted).
    Deleted,
    /// It had no such manifest (404).
    Absent,
    /// It does not allow deletes (405, `UNSUPPORTED`).
    Unsupported,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error(
        "registry {registry} refused the API server's credentials for deletes ({status}); \
         the operator sets them with --registry-config"
    )]
    Unauthorized { registry: String, status: u16 },
    #[error("registry {registry} answered {status} to the manifest delete{reason}")]
    Refused {
        registry: String,
        status: u16,
        reason: String,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl Registries {
    pub fn new(settings: RegistrySettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            // A delete is not repeated at another address.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, settings })
    }

    /// Deletes the manifest `digest` of `target`'s repository. Registries
    /// delete by digest: every tag on that manifest goes with it.
    pub async fn delete_manifest(
        &self,
        target: &Target,
        digest: &str,
    ) -> Result<DeleteOutcome, RegistryError> {
        let registry = target.registry.as_str();
        let url = format!(
            "{}/v2/{}/manifests/{digest}",
            base_url(&self.settings.insecure, registry),
            target.repository
        );
        let credentials = match &self.settings.credentials_file {
            Some(file) => load_credentials(file, registry)?,
            None => None,
        };
        let mut authorization = credentials.as_ref().map(basic);
        let mut answer = self
            .send_delete(registry, &url, authorization.as_deref())
            .await?;
        if answer.status() == StatusCode::UNAUTHORIZED
            && let Some(challenge) = bearer_challenge(&answer)
        {
            let scope = challenge
                .scope
                .clone()
                .unwrap_or_else(|| format!("repository:{}:delete", target.repository));
            let token = self
                .token(registry, &challenge, &scope, credentials.as_ref())
                .await?;
            authorization = Some(format!("Bearer {token}"));
            answer = self
                .send_delete(registry, &url, authorization.as_deref())
                .await?;
        }
        let status = answer.status();
        match status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => {
                Ok(DeleteOutcome::Deleted)
            }
            StatusCode::NOT_FOUND => Ok(DeleteOutcome::Absent),
            StatusCode::METHOD_NOT_ALLOWED => Ok(DeleteOutcome::Unsupported),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                status: status.as_u16(),
            }),
            _ => Err(RegistryError::Refused {
                registry: registry.to_string(),
                status: status.as_u16(),
                reason: error_message(answer).await,
            }),
        }
    }

    async fn send_delete(
        &self,
        registry: &str,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.delete(url);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request.send().await.map_err(|e| unreachable(registry, &e))
    }

    /// A token for `scope` from the challenge's realm, with the credentials
    /// (when there are any) as Basic authentication.
    async fn token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let refused = |reason: &str| RegistryError::Refused {
            registry: registry.to_string(),
            status: 401,
            reason: format!(": {reason}"),
        };
        let mut realm = reqwest::Url::parse(&challenge.realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or_else(|| refused("its token realm is not an http(s) URL"))?;
        {
            let mut query = realm.query_pairs_mut();
            query.append_pair("scope", scope);
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
        }
        let mut request = self.http.get(realm);
        if let Some(c) = credentials {
            request = request.basic_auth(&c.username, Some(c.password()));
        }
        let answer = request
            .send()
            .await
            .map_err(|e| unreachable(registry, &e))?;
        if matches!(
            answer.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                status: answer.status().as_u16(),
            });
        }
        if !answer.status().is_success() {
            return Err(refused(&format!(
                "its token realm answered {}",
                answer.status().as_u16()
            )));
        }
        let body = read_capped(answer, MAX_TOKEN_ANSWER)
            .await
            .ok_or_else(|| refused("its token answer is too large or unreadable"))?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenAnswer =
            serde_json::from_slice(&body).map_err(|_| refused("its token answer is not JSON"))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| refused("its token answer holds no usable token"))
    }
}

/// `scheme://host` of a registry's API.
fn base_url(insecure: &[String], registry: &str) -> String {
    let host = match registry {
        // Docker Hub's API lives on another host than its name.
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    };
    let scheme = if insecure.iter().any(|i| i == registry) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{host}")
}

fn basic(credentials: &Credentials) -> String {
    use base64::Engine as _;
    let pair = format!("{}:{}", credentials.username, credentials.password());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn unreachable(registry: &str, error: &reqwest::Error) -> RegistryError {
    RegistryError::Unreachable {
        registry: registry.to_string(),
        reason: dcs_support::describe_chain(error),
    }
}

/// A `WWW-Authenticate: Bearer realm="..",service="..",scope=".."`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn bearer_challenge(answer: &reqwest::Response) -> Option<Challenge> {
    let header = answer.headers().get(WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_challenge(header)
}

/// Parses a Bearer challenge; `None` for any other scheme or without a
/// realm. Values are quoted strings (with `\` escapes) or plain tokens.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = std::collections::HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if name.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        params.insert(name, value.trim().to_string());
    }
    Some(Challenge {
        realm: params.remove("realm").filter(|r| !r.is_empty())?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// The body, if it is at most `limit` bytes.
async fn read_capped(mut answer: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// `: <message>` from a registry's error answer (`{"errors": [{"code",
/// "message"}]}`), printable and short; empty when there is none.
async fn error_message(answer: reqwest::Response) -> String {
    let Some(body) = read_capped(answer, MAX_ERROR_ANSWER).await else {
        return String::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return String::new();
    };
    let first = &value["errors"][0];
    let text = [first["code"].as_str(), first["message"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    if clean.is_empty() {
        clean
    } else {
        format!(": {clean}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_and_hostile_ones_do_not() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:delete""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        assert_eq!(c.scope.as_deref(), Some("repository:a/b:delete"));

        let c = parse_challenge(r#"bearer realm=https://a/t, scope="x\"y""#).unwrap();
        assert_eq!(
            (c.realm.as_str(), c.scope.as_deref()),
            ("https://a/t", Some("x\"y"))
        );

        assert!(parse_challenge(r#"Basic realm="r""#).is_none());
        assert!(parse_challenge("Bearer service=x").is_none());
        assert!(parse_challenge("Bearer").is_none());
        assert!(parse_challenge(r#"Bearer realm=""#).is_none());
        // Unterminated quotes, stray commas and equals signs end cleanly.
        let odd = format!("Bearer realm=\"{}", "x".repeat(100_000));
        assert_eq!(parse_challenge(&odd).unwrap().realm.len(), 100_000);
        assert!(parse_challenge("Bearer ,,,=,=").is_none());
    }

    #[test]
    fn insecure_registries_use_plain_http_and_docker_hub_its_api_host() {
        let insecure = ["127.0.0.1:5000".to_string()];
        assert_eq!(
            base_url(&insecure, "127.0.0.1:5000"),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            base_url(&insecure, "127.0.0.1:5001"),
            "https://127.0.0.1:5001"
        );
        assert_eq!(
            base_url(&insecure, "docker.io"),
            "https://registry-1.docker.io"
        );
    }
}
