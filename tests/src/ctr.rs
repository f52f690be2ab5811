//! Driving containerd with its own `ctr` tool, to set up and check what the
//! agent does with tools that are not ours.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{BUSYBOX_IMAGE, busybox_archive};

/// `ctr` bound to one daemon and one namespace. Dropping it removes the
/// namespace's containers, images and content (best effort).
#[derive(Debug)]
pub struct Ctr {
    pub socket: PathBuf,
    pub namespace: String,
}

impl Ctr {
    pub fn new(socket: &Path, namespace: &str) -> Self {
        Self {
            socket: socket.to_path_buf(),
            namespace: namespace.to_string(),
        }
    }

    /// Runs ctr; returns stdout, fails the test on error.
    pub fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run ctr");
        assert!(
            output.status.success(),
            "ctr {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Runs ctr; returns (success, stdout, stderr).
    pub fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let output = self.command(args).output().expect("run ctr");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    }

    /// `ctr content get`: the raw bytes of a blob of this namespace.
    pub fn content_get(&self, digest: &str) -> Vec<u8> {
        let output = self
            .command(&["content", "get", digest])
            .output()
            .expect("run ctr content get");
        assert!(
            output.status.success(),
            "ctr content get {digest} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .args(args);
        command
    }

    /// Imports the busybox test image, unpacked for `snapshotter`.
    pub fn import_busybox(&self, snapshotter: &str) -> &'static str {
        let archive = busybox_archive();
        self.run(&[
            "images",
            "import",
            "--snapshotter",
            snapshotter,
            archive.to_str().expect("utf-8 path"),
        ]);
        BUSYBOX_IMAGE
    }

    /// Pulls `image` unless this namespace has it, as kubelet does for a
    /// pod whose image is "IfNotPresent": the agent keeps a committed image
    /// only in the registry unless it runs with `--local-image`.
    pub fn ensure_image(&self, image: &str, snapshotter: &str) {
        let filter = format!("name=={image}");
        if !self.run(&["images", "ls", "-q", &filter]).trim().is_empty() {
            return;
        }
        self.run(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            snapshotter,
            image,
        ]);
    }

    /// Starts a container in the background with the CRI labels kubelet sets.
    pub fn run_detached(&self, id: &str, image: &str, snapshotter: &str, command: &[&str]) {
        self.ensure_image(image, snapshotter);
        let mut args = vec![
            "run",
            "-d",
            "--snapshotter",
            snapshotter,
            "--label",
            "io.kubernetes.pod.name=desktop-0",
            "--label",
            "io.kubernetes.pod.namespace=workshop",
            "--label",
            "io.kubernetes.container.name=desktop",
            image,
            id,
        ];
        args.extend_from_slice(command);
        self.run(&args);
    }

    /// Runs a shell script inside a running container; returns stdout.
    pub fn exec(&self, id: &str, script: &str) -> String {
        let exec_id = format!("x{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.run(&[
            "tasks",
            "exec",
            "--exec-id",
            &exec_id,
            id,
            "sh",
            "-c",
            script,
        ])
    }

    /// Runs a new container from `image` to completion; returns stdout.
    pub fn run_once(&self, image: &str, script: &str) -> String {
        self.ensure_image(image, "overlayfs");
        let id = crate::unique("once");
        self.run(&["run", "--rm", image, &id, "sh", "-c", script])
    }

    /// Runs the image's own command to completion; returns stdout.
    pub fn run_default(&self, image: &str) -> String {
        self.ensure_image(image, "overlayfs");
        let id = crate::unique("default");
        self.run(&["run", "--rm", image, &id])
    }

    pub fn pull_plain_http(&self, reference: &str) {
        self.run(&["images", "pull", "--plain-http", reference]);
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let (_, tasks, _) = self.try_run(&["tasks", "ls", "-q"]);
        for task in tasks.lines().filter(|l| !l.is_empty()) {
            let _ = self.try_run(&["tasks", "kill", "-s", "SIGKILL", task]);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (_, containers, _) = self.try_run(&["containers", "ls", "-q"]);
        for container in containers.lines().filter(|l| !l.is_empty()) {
            let _ = self.try_run(&["tasks", "rm", "-f", container]);
            let _ = self.try_run(&["containers", "rm", container]);
        }
        let (_, images, _) = self.try_run(&["images", "ls", "-q"]);
        for image in images.lines().filter(|l| !l.is_empty()) {
            let _ = self.try_run(&["images", "rm", "--sync", image]);
        }
        let _ = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["namespaces", "rm", &self.namespace])
            .output();
    }
}
