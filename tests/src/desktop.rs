//! Desktops started the way CRI starts a pod's container: a sandbox
//! container carrying the pod's labels (`dcs.io/owner` among them), then the
//! application container with the CRI labels that tie it to the pod.
//!
//! Ownership is read from the sandbox only, as the agent does on a real
//! node: the application container's labels begin as a copy of its image's
//! `LABEL`s, so they prove nothing. [`Desktop::image_label`] puts such a
//! copied label on it to show exactly that.

use crate::Ctr;

/// A desktop to start; `ctr.desktop(id, image).owner("alice").start()`.
#[derive(Debug)]
pub struct Desktop<'a> {
    ctr: &'a Ctr,
    id: String,
    image: String,
    namespace: String,
    pod: String,
    owner: Option<String>,
    image_labels: Vec<(String, String)>,
}

impl Ctr {
    /// A desktop (container `desktop`, sleeping, on overlayfs) of pod
    /// `workshop/desktop-0` with no owner, until told otherwise.
    pub fn desktop(&self, id: &str, image: &str) -> Desktop<'_> {
        Desktop {
            ctr: self,
            id: id.to_string(),
            image: image.to_string(),
            namespace: "workshop".into(),
            pod: "desktop-0".into(),
            owner: None,
            image_labels: Vec::new(),
        }
    }
}

impl Desktop<'_> {
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }

    pub fn pod(mut self, pod: &str) -> Self {
        self.pod = pod.to_string();
        self
    }

    /// The speaker the pod belongs to (`dcs.io/owner` on the sandbox).
    pub fn owner(mut self, sub: &str) -> Self {
        self.owner = Some(sub.to_string());
        self
    }

    /// A label of the image, which containerd copies onto the application
    /// container (`ctr run` does not, CRI does).
    pub fn image_label(mut self, key: &str, value: &str) -> Self {
        self.image_labels.push((key.to_string(), value.to_string()));
        self
    }

    /// The sandbox's container id.
    pub fn sandbox_id(&self) -> String {
        format!("{}-sandbox", self.id)
    }

    /// Creates the sandbox (a container record; its pause process is not
    /// needed here) and starts the application container.
    pub fn start(self) {
        self.ctr.ensure_image(&self.image, "overlayfs");
        let uid = uuid::Uuid::new_v4().to_string();
        let pod_labels = [
            format!("io.kubernetes.pod.uid={uid}"),
            format!("io.kubernetes.pod.name={}", self.pod),
            format!("io.kubernetes.pod.namespace={}", self.namespace),
        ];
        let mut sandbox: Vec<String> = vec![
            "containers".into(),
            "create".into(),
            "--snapshotter".into(),
            "overlayfs".into(),
            "--label".into(),
            "io.cri-containerd.kind=sandbox".into(),
        ];
        for label in &pod_labels {
            sandbox.extend(["--label".into(), label.clone()]);
        }
        if let Some(owner) = &self.owner {
            sandbox.extend(["--label".into(), format!("dcs.io/owner={owner}")]);
        }
        sandbox.extend([self.image.clone(), self.sandbox_id()]);
        self.ctr
            .run(&sandbox.iter().map(String::as_str).collect::<Vec<_>>());

        let mut app: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--snapshotter".into(),
            "overlayfs".into(),
        ];
        // Image labels first: CRI's own labels win over them.
        for (key, value) in &self.image_labels {
            app.extend(["--label".into(), format!("{key}={value}")]);
        }
        for label in pod_labels.iter().cloned().chain([
            "io.kubernetes.container.name=desktop".to_string(),
            "io.cri-containerd.kind=container".to_string(),
        ]) {
            app.extend(["--label".into(), label]);
        }
        app.extend([
            self.image.clone(),
            self.id.clone(),
            "sleep".into(),
            "3600".into(),
        ]);
        self.ctr
            .run(&app.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
