//! What the tests read off the stack from outside: Prometheus samples, the
//! registry (through skopeo), containerd's tasks (through ctr).

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
