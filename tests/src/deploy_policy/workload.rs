//! The rules every pod template obeys, whatever its workload. Each concern
//! has its module; this walks the workload's pod and containers through
//! them, in the order the problems are reported.

use std::collections::BTreeSet;

use super::bundle::{Bundle, Workload};
use super::{host, images, probes, resources, secrets, security_context};

pub(super) fn check_workload(bundle: &Bundle, w: &Workload, problems: &mut Vec<String>) {
    let spec = &w.spec;
    let what = &w.what;
    host::check_namespaces(w, problems);
    if spec.ephemeral_containers.is_some() {
        problems.push(format!(
            "{what}: ephemeral containers do not belong in manifests"
        ));
    }
    match spec.service_account_name.as_deref() {
        None | Some("default") => problems.push(format!(
            "{what}: runs as the namespace's default service account; give it its own"
        )),
        Some(sa)
            if !bundle
                .service_accounts()
                .any(|s| s.metadata.name.as_deref() == Some(sa)) =>
        {
            problems.push(format!("{what}: service account `{sa}` is not in the base"));
        }
        Some(_) => {}
    }

    let host_path_volumes = host::check_volumes(w, problems);
    let regular: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();

    for container in w.containers() {
        let what = format!("{what}, container {}", container.name);
        let is_init = !regular.contains(container.name.as_str());
        images::check_image(&what, container, problems);
        secrets::check_environment(&what, container, problems);
        resources::check_resources(&what, container, problems);
        // Jobs and init containers run to completion: no probes for them.
        if !w.is_job() && !is_init {
            probes::check_probes(w, &what, container, problems);
        }
        host::check_mounts(&what, container, &host_path_volumes, problems);
        security_context::check_security_context(w, &what, container, problems);
    }
}
