//! Registry credentials from a `dockerconfigjson` file: the format of
//! Kubernetes `kubernetes.io/dockerconfigjson` Secrets, mounted as a file.
//! The agent pushes with them and the API server deletes with them.
//! Credentials live in a type that never prints them.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

/// A credentials file that cannot be used; says why without its content.
#[derive(Debug)]
pub struct CredentialsError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read registry credentials from {}: {}",
            self.path, self.reason
        )
    }
}

impl std::error::Error for CredentialsError {}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials for `registry` (`host[:port]`) in the file, if any.
pub fn load_credentials(
    file: &Path,
    registry: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    let error = |reason: String| CredentialsError {
        path: file.display().to_string(),
        reason,
    };
    let text = std::fs::read(file).map_err(|e| error(e.to_string()))?;
    // Never echo the file's content: a parse error position is enough.
    let config: ConfigFile = serde_json::from_slice(&text).map_err(|e| {
        error(format!(
            "not a dockerconfigjson file (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let wanted = normalise_host(registry);
    let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| normalise_host(key) == wanted)
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password)
        && !username.is_empty()
    {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| error(format!("the \"auth\" of {registry} is not base64")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| error(format!("the \"auth\" of {registry} is not text")))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| error(format!("the \"auth\" of {registry} is not user:password")))?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry;
/// keys in these files come in both forms.
fn normalise_host(key: &str) -> String {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or_default();
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{
                "127.0.0.1:5000":{"auth":"ZGNzOnMzY3IzdDpwYXJ0"},
                "https://index.docker.io/v1/":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        let c = load_credentials(&path, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password()), ("dcs", "s3cr3t:part"));
        let c = load_credentials(&path, "index.docker.io").unwrap().unwrap();
        assert_eq!(c.username, "u");
        assert!(load_credentials(&path, "other:1").unwrap().is_none());
        assert!(!format!("{c:?}").contains('p') || !format!("{c:?}").contains("\"p\""));
    }

    #[test]
    fn parse_errors_do_not_echo_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{\"auths\": secret-token").unwrap();
        let message = load_credentials(&path, "x").unwrap_err().to_string();
        assert!(!message.contains("secret-token"), "{message}");
    }
}
