//! A registry of the test's own, for what the shared ones cannot show: one
//! that refuses deletes (the distribution registry's default).

use std::time::{Duration, Instant};

use super::free_port;
use super::process::Process;

/// A `docker-registry` process on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct Registry {
    _process: Process,
    /// `127.0.0.1:<port>`.
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A plain-HTTP registry with deletes disabled.
    pub async fn start_without_deletes() -> Self {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {address}\n  secret: test-registry-without-deletes\n",
                dir.path().join("storage").display()
            ),
        )
        .expect("registry config");
        let mut command = std::process::Command::new("docker-registry");
        command.arg("serve").arg(&config);
        let process = Process::spawn(command, dir.path().join("registry.log"));
        let http = super::http_client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(answer) = http.get(format!("http://{address}/v2/")).send().await
                && answer.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start:\n{}",
                process.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            _process: process,
            address,
            _dir: dir,
        }
    }
}

/// The status of `HEAD /v2/<repository>/manifests/<digest>` on a
/// plain-HTTP registry, with Basic credentials when given: 200 while the
/// manifest is there, 404 once it is deleted.
pub async fn manifest_status(
    registry: &str,
    repository: &str,
    digest: &str,
    basic: Option<(&str, &str)>,
) -> u16 {
    let mut request = super::http_client()
        .head(format!(
            "http://{registry}/v2/{repository}/manifests/{digest}"
        ))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json",
        );
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    request
        .send()
        .await
        .expect("HEAD the manifest")
        .status()
        .as_u16()
}
