//! What the tests read off the stack from outside: Prometheus samples, the
//! registry (through skopeo, and its storage for what a refused push left),
//! containerd's tasks (through ctr).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The value of a Prometheus sample (`name{labels} value`), 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// `skopeo inspect --raw` of a reference on a plain-HTTP registry: the
/// manifest bytes, or skopeo's error.
pub fn skopeo_inspect(reference: &str) -> Result<Vec<u8>, String> {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

/// The digest the registry serves for a reference; fails the test if none.
pub fn registry_digest(reference: &str) -> String {
    let manifest =
        skopeo_inspect(reference).unwrap_or_else(|e| panic!("skopeo inspect {reference}: {e}"));
    crate::layer::sha256_hex(&manifest)
}

/// The status of a container's task (`RUNNING`, `PAUSED`, `STOPPED`, ...)
/// as `ctr tasks ls` shows it; `None` without a task.
pub fn task_status(ctr: &crate::Ctr, id: &str) -> Option<String> {
    ctr.run(&["tasks", "ls"]).lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.first() == Some(&id)).then(|| fields.last().unwrap_or(&"").to_string())
    })
}

/// A repository's directory in the test registry's storage.
pub fn repository_dir(repository: &str) -> PathBuf {
    PathBuf::from(crate::required("DCS_REGISTRY_ROOT"))
        .join("docker/registry/v2/repositories")
        .join(repository)
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(items) = std::fs::read_dir(dir) else {
        return found;
    };
    for item in items.flatten() {
        let path = item.path();
        if path.is_dir() {
            found.extend(files_below(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Nothing of a refused commit is in the registry: no manifest (no tag),
/// no layer linked into the repository, no upload data. (Docker's registry
/// leaves one file of a deleted upload behind: the SHA-256 state of zero
/// bytes, `hashstates/sha256/0`, which holds nothing of the layer.)
pub fn assert_nothing_pushed(repository: &str) {
    let dir = repository_dir(repository);
    assert!(
        files_below(&dir.join("_manifests")).is_empty(),
        "a manifest of {repository} reached the registry"
    );
    assert!(
        files_below(&dir.join("_layers")).is_empty(),
        "a layer was linked into {repository}"
    );
    for file in files_below(&dir.join("_uploads")) {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name == "0"
                && file
                    .parent()
                    .is_some_and(|p| p.ends_with("hashstates/sha256")),
            "upload data of a refused commit is left in the registry: {}",
            file.display()
        );
    }
}
