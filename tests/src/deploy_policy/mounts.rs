//! Files a container reads from its volumes: which Secret, which projected
//! service-account token, which API-server credentials a path is.

use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};

use super::KUBE_API_ACCESS_DIR;
use super::bundle::Workload;

/// The Secret and Secret key behind a path inside a mounted Secret volume
/// of `container`.
pub(super) fn secret_file(
    workload: &Workload,
    container: &Container,
    path: &str,
) -> Result<(String, String), String> {
    let (mount, volume, file) = mounted_file(workload, container, path)?;
    let secret = volume.secret.as_ref().ok_or_else(|| {
        format!(
            "{path} is in volume `{}`, which is not a Secret volume",
            mount.name
        )
    })?;
    let name = secret.secret_name.clone().unwrap_or_default();
    let key = match &secret.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == file)
            .map(|i| i.key.clone())
            .ok_or_else(|| {
                format!(
                    "{path}: Secret volume `{}` lists no item with path `{file}`",
                    mount.name
                )
            })?,
        None => file,
    };
    Ok((name, key))
}

/// The volume mount of `container` that holds `path`, that volume, and
/// `path` relative to the mount.
pub(super) fn mounted_file<'a>(
    workload: &'a Workload,
    container: &'a Container,
    path: &str,
) -> Result<(&'a VolumeMount, &'a Volume, String), String> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| {
            path.strip_prefix(m.mount_path.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(|| format!("{path} is not inside any volume mount"))?;
    let file = path[mount.mount_path.trim_end_matches('/').len() + 1..].to_string();
    let volume = workload
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or_else(|| format!("volume `{}` is mounted but not declared", mount.name))?;
    Ok((mount, volume, file))
}

/// A projected service-account token file of a container.
pub(super) struct TokenFile {
    pub(super) volume: String,
    pub(super) audience: Option<String>,
}

/// The projected service-account token `path` is, in `container`.
pub(super) fn projected_token(
    workload: &Workload,
    container: &Container,
    path: &str,
) -> Result<TokenFile, String> {
    let (_, volume, file) = mounted_file(workload, container, path)?;
    let token = volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .find(|t| t.path == file)
        .ok_or_else(|| {
            format!(
                "{path} is in volume `{}`, which projects no service-account token at `{file}`",
                volume.name
            )
        })?;
    Ok(TokenFile {
        volume: volume.name.clone(),
        audience: token.audience.clone().filter(|a| !a.is_empty()),
    })
}

/// What in-cluster Kubernetes clients read at KUBE_API_ACCESS_DIR, from a
/// projected volume mounted in `container`: a token for the API server (no
/// audience), `ca.crt` from the `kube-root-ca.crt` ConfigMap, the pod's
/// namespace. What is missing, if anything.
pub(super) fn kube_api_access(workload: &Workload, container: &Container) -> Result<(), String> {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == KUBE_API_ACCESS_DIR)
        .ok_or_else(|| format!("nothing is mounted at {KUBE_API_ACCESS_DIR}"))?;
    let sources: Vec<_> = workload
        .spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.projected.as_ref())
        .ok_or_else(|| {
            format!(
                "{KUBE_API_ACCESS_DIR} is volume `{}`, which is not a projected volume",
                mount.name
            )
        })?
        .sources
        .iter()
        .flatten()
        .collect();
    let mut missing = Vec::new();
    if !sources.iter().any(|s| {
        s.service_account_token
            .as_ref()
            .is_some_and(|t| t.path == "token" && t.audience.as_deref().unwrap_or("").is_empty())
    }) {
        missing.push("`token` (a serviceAccountToken without audience: the API server's)");
    }
    if !sources.iter().any(|s| {
        s.config_map.as_ref().is_some_and(|c| {
            c.name == "kube-root-ca.crt"
                && c.items.as_ref().is_none_or(|items| {
                    items
                        .iter()
                        .any(|i| i.key == "ca.crt" && i.path == "ca.crt")
                })
        })
    }) {
        missing.push("`ca.crt` (from the ConfigMap kube-root-ca.crt)");
    }
    if !sources.iter().any(|s| {
        s.downward_api.as_ref().is_some_and(|d| {
            d.items.iter().flatten().any(|i| {
                i.path == "namespace"
                    && i.field_ref
                        .as_ref()
                        .is_some_and(|f| f.field_path == "metadata.namespace")
            })
        })
    }) {
        missing.push("`namespace` (downward API metadata.namespace)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "volume `{}` at {KUBE_API_ACCESS_DIR} lacks {}",
            mount.name,
            missing.join(", ")
        ))
    }
}
