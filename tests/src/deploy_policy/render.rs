//! The manifests as kubectl renders them: `kubectl kustomize deploy/<dir>`
//! (exactly what `kubectl apply -k` would apply), split into YAML documents.
//!
//! kubectl comes from Debian's `kubernetes-client` package (or `KUBECTL`
//! names one); without it the policy cannot be checked and the tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::serde::Deserialize as _;
use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// `kubectl kustomize deploy/<dir>`.
fn render(dir: &str) -> String {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let path = workspace_root().join("deploy").join(dir);
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{kubectl} kustomize {}`: {e}. These tests need kubectl: install \
                 Debian's `kubernetes-client` package (apt-get install kubernetes-client) or set \
                 KUBECTL to a kubectl binary",
                path.display()
            )
        });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize {}` failed ({}):\n{}",
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kustomize output is UTF-8")
}

/// `kubectl kustomize deploy/base`, once per test process.
fn rendered_base() -> &'static str {
    static RENDERED: OnceLock<String> = OnceLock::new();
    RENDERED.get_or_init(|| render("base"))
}

fn example_secrets_text() -> String {
    let path = workspace_root().join("deploy/examples/secrets.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every non-empty YAML document of `text`, as JSON values.
fn documents(text: &str, source: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{source}: document {} is not valid YAML: {e}", index + 1));
        if !value.is_null() {
            out.push(value);
        }
    }
    out
}

pub fn base_documents() -> Vec<Value> {
    documents(rendered_base(), "kubectl kustomize deploy/base")
}

pub fn shared_secret_overlay_documents() -> Vec<Value> {
    documents(
        &render("overlays/shared-secret"),
        "kubectl kustomize deploy/overlays/shared-secret",
    )
}

pub fn example_documents() -> Vec<Value> {
    documents(&example_secrets_text(), "deploy/examples/secrets.yaml")
}
