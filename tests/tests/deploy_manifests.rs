//! The Kubernetes manifests in `deploy/`, end to end.
//!
//! `kubectl kustomize deploy/base` renders the base exactly as `kubectl apply
//! -k` would, and the deployment policy (`e2e_tests::deploy_policy`, where
//! each check sits beside the deliberate violations it must catch) is
//! enforced on what it renders, and on `deploy/overlays/shared-secret` with
//! the shared-secret identity. `manifests_match_the_binaries_and_images`
//! checks that every flag, environment variable and subcommand the
//! manifests use exists in the built binaries, and that the image files
//! install them where the manifests expect.
//!
//! kubectl comes from Debian's `kubernetes-client` package (or `KUBECTL`
//! names one); without it these tests fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_tests::built_binary;
use e2e_tests::deploy_policy::render::{
    base_documents, example_documents, shared_secret_overlay_documents, workspace_root,
};
use e2e_tests::deploy_policy::{
    Identity, Object, assert_no_problems, check, check_as, image_name, load,
};

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let mut problems = Vec::new();
    let bundle = load(&base_documents(), &example_documents(), &mut problems);
    assert_no_problems(&problems);
    let kinds: BTreeSet<&str> = bundle
        .objects
        .iter()
        .map(|o| match o {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
            Object::Service(_) => "Service",
            Object::DaemonSet(_) => "DaemonSet",
            Object::Deployment(_) => "Deployment",
            Object::StatefulSet(_) => "StatefulSet",
            Object::Job(_) => "Job",
            Object::CronJob(_) => "CronJob",
            Object::Pod(_) => "Pod",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
        })
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ] {
        assert!(
            kinds.contains(kind),
            "the base renders no {kind}; it has {kinds:?}"
        );
    }
    assert!(
        bundle.example_secrets.len() >= 4,
        "deploy/examples/secrets.yaml should show the database URL, JWT key, agent secret and \
         registry credentials Secrets; it has {:?}",
        bundle.example_secrets.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_manifests_follow_the_deployment_policy() {
    assert_no_problems(&check(&base_documents(), &example_documents()));
}

#[test]
fn the_shared_secret_overlay_follows_the_policy() {
    let overlay = shared_secret_overlay_documents();
    let examples = example_documents();
    assert_no_problems(&check_as(&overlay, &examples, Identity::SharedSecret));
    // And the two policies do tell the modes apart.
    let as_in_cluster = check_as(&overlay, &examples, Identity::InCluster);
    assert!(
        as_in_cluster
            .iter()
            .any(|p| p.contains("in-cluster identity needs DCS_AGENT_SA_TOKEN_FILE")),
        "the overlay passes as in-cluster identity: {as_in_cluster:#?}"
    );
    let base_as_shared = check_as(&base_documents(), &examples, Identity::SharedSecret);
    assert!(
        base_as_shared
            .iter()
            .any(|p| p.contains("the shared-secret identity uses no service-account tokens")),
        "the base passes as shared-secret identity: {base_as_shared:#?}"
    );
}

// ---------------------------------------------------------------------------
// The manifests against the binaries and the image files

fn help(binary: &Path, subcommand: &str) -> Result<String, String> {
    let output = Command::new(binary)
        .args([subcommand, "--help"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} {subcommand} --help` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What an image file installs: (binary path, user, cargo package).
struct ImageFile {
    binary_path: String,
    user: String,
    package: String,
}

fn image_file(name: &str) -> ImageFile {
    let path = workspace_root().join(format!("deploy/images/{name}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let binary_path = lines
        .iter()
        .filter_map(|l| l.strip_prefix("COPY --from=build "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .next_back()
        .unwrap_or_else(|| panic!("{name}: no `COPY --from=build <built> <installed>` line"))
        .to_string();
    let user = lines
        .iter()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap_or_else(|| panic!("{name}: no USER line"))
        .to_string();
    let package = lines
        .iter()
        .find_map(|l| l.split("cargo build --release --locked -p ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name}: no `cargo build --release --locked -p <package>` line"))
        .to_string();
    let entrypoint = format!("ENTRYPOINT [\"{binary_path}\"]");
    assert!(
        lines.contains(&entrypoint.as_str()),
        "{name}: the entrypoint must be the installed binary: `{entrypoint}`"
    );
    ImageFile {
        binary_path,
        user,
        package,
    }
}

#[test]
fn manifests_match_the_binaries_and_images() {
    let mut problems = Vec::new();
    let bundle = load(&base_documents(), &example_documents(), &mut problems);
    assert_no_problems(&problems);

    // image name -> (binary, image file, cargo package)
    let images: BTreeMap<&str, (PathBuf, ImageFile, &str)> = [
        ("dcs-agent", "agent.Containerfile", "node-agent"),
        ("dcs-api", "api.Containerfile", "api"),
    ]
    .into_iter()
    .map(|(image, file, package)| (image, (built_binary(image), image_file(file), package)))
    .collect();
    for (image, (_, file, package)) in &images {
        if file.package != *package {
            problems.push(format!(
                "deploy/images: the {image} image builds package `{}`, not `{package}`",
                file.package
            ));
        }
    }
    // Read by the code itself, not through a flag: POD_IP builds the
    // agent's default advertise URL (its --advertise-url help says so);
    // RUST_LOG is tracing's log filter.
    let read_directly = ["POD_IP", "RUST_LOG"];

    for workload in &bundle.workloads {
        for container in workload.containers() {
            let what = format!("{}, container {}", workload.what, container.name);
            let image = image_name(container.image.as_deref().unwrap_or_default());
            let Some((binary, file, _)) = images.get(image) else {
                problems.push(format!(
                    "{what}: image {image} is not built by deploy/images"
                ));
                continue;
            };
            let args = container.args.clone().unwrap_or_default();
            let subcommand = args
                .iter()
                .find(|a| !a.starts_with('-'))
                .cloned()
                .unwrap_or_else(|| "serve".to_string());
            let text = match help(binary, &subcommand) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
            for arg in args.iter().filter(|a| a.starts_with("--")) {
                let flag = arg.split('=').next().unwrap_or(arg);
                if !text.contains(&format!("{flag} ")) && !text.contains(&format!("{flag}\n")) {
                    problems.push(format!("{what}: `{image} {subcommand}` has no flag {flag}"));
                }
            }
            for env in container.env.iter().flatten() {
                let known = text.contains(&format!("[env: {}=", env.name))
                    || (read_directly.contains(&env.name.as_str())
                        && (env.name != "POD_IP" || text.contains("$POD_IP")));
                if !known {
                    problems.push(format!(
                        "{what}: `{image} {subcommand}` reads no environment variable {}",
                        env.name
                    ));
                }
            }
            if container.command.is_some() {
                problems.push(format!(
                    "{what}: sets `command`; leave the image's entrypoint ({}) in place",
                    file.binary_path
                ));
            }
            // The probes run the installed binary with a real subcommand.
            for probe in [&container.liveness_probe, &container.readiness_probe]
                .into_iter()
                .flatten()
            {
                let Some(command) = probe.exec.as_ref().and_then(|e| e.command.clone()) else {
                    continue;
                };
                if command.first() != Some(&file.binary_path) {
                    problems.push(format!(
                        "{what}: exec probe {command:?} must run {} (where the image installs it)",
                        file.binary_path
                    ));
                    continue;
                }
                let Some(sub) = command.get(1) else {
                    continue;
                };
                match help(binary, sub) {
                    Err(e) => problems.push(format!("{what}: exec probe {command:?}: {e}")),
                    Ok(text) => {
                        for word in command.iter().skip(2) {
                            if !text.contains(word.split('=').next().unwrap_or(word)) {
                                problems.push(format!(
                                    "{what}: exec probe {command:?}: `{image} {sub} --help` does \
                                     not mention {word}"
                                ));
                            }
                        }
                    }
                }
            }
            // The image's user is the one the manifest runs it as.
            let manifest_user = container
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .or(workload
                    .spec
                    .security_context
                    .as_ref()
                    .and_then(|s| s.run_as_user));
            let image_user: Option<i64> = file.user.split(':').next().and_then(|u| u.parse().ok());
            if manifest_user.is_some() && manifest_user != image_user {
                problems.push(format!(
                    "{what}: runs as user {manifest_user:?}, but the image's USER is {}",
                    file.user
                ));
            }
        }
    }
    assert_no_problems(&problems);
}
