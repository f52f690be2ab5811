//! Deriving the committed image's config and manifest from the base image.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::base::BaseImage;
use super::changes::{ConfigChange, apply_changes, describe_changes};
use super::{Descriptor, Manifest, annotation, media_type, oci_layer_media_type, sha256_digest};

/// The new layer, as the pipeline produced it.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar: the config's `diff_id`.
    pub diff_id: String,
}

/// What the commit asks for beyond the layer itself.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub changes: Vec<ConfigChange>,
    pub message: Option<String>,
    pub snapshot_id: Option<String>,
    /// A flatten: how many layers above the base the new layer replaces
    /// (0 for a commit).
    pub layers_merged: usize,
}

/// The documents of the new image, serialised once so the digests that
/// containerd, the registry and the caller see are of the same bytes.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub manifest: Vec<u8>,
    pub manifest_descriptor: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Builds the config and manifest of `base` plus the new layers (one, or
/// a commit's bulk layer and the delta of what changed while it was read).
pub fn build_image(
    base: &BaseImage,
    new_layers: &[NewLayer],
    options: &CommitOptions,
    created: DateTime<Utc>,
) -> BuiltImage {
    let created_text = created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let config = derive_config(&base.config, new_layers, options, &created_text);
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_descriptor = Descriptor {
        media_type: media_type::OCI_CONFIG.to_string(),
        digest: sha256_digest(&config),
        size: config.len() as i64,
        annotations: BTreeMap::new(),
        platform: None,
    };

    let mut layers: Vec<Descriptor> = base
        .manifest
        .layers
        .iter()
        .map(|d| Descriptor {
            media_type: oci_layer_media_type(&d.media_type).to_string(),
            ..d.clone()
        })
        .collect();
    layers.extend(new_layers.iter().map(|l| l.descriptor.clone()));

    let mut annotations = BTreeMap::from([
        (annotation::BASE_NAME.to_string(), base.name.clone()),
        (
            annotation::BASE_DIGEST.to_string(),
            base.manifest_descriptor.digest.clone(),
        ),
        (annotation::CREATED.to_string(), created_text),
    ]);
    if let Some(id) = &options.snapshot_id {
        annotations.insert(annotation::SNAPSHOT_ID.to_string(), id.clone());
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_string()),
        config: config_descriptor.clone(),
        layers: layers.clone(),
        annotations,
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    let manifest_descriptor = Descriptor {
        media_type: media_type::OCI_MANIFEST.to_string(),
        digest: sha256_digest(&manifest),
        size: manifest.len() as i64,
        annotations: BTreeMap::new(),
        platform: None,
    };
    BuiltImage {
        config,
        config_descriptor,
        manifest,
        manifest_descriptor,
        layers,
    }
}

/// The base config plus the new layer's diff_id, a history entry and the
/// requested changes. The history names what changed but never values or
/// command arguments: those can hold secrets, and history is public.
fn derive_config(
    base: &Value,
    new_layers: &[NewLayer],
    options: &CommitOptions,
    created: &str,
) -> Value {
    let mut config = base.clone();
    let Some(root) = config.as_object_mut() else {
        return config;
    };
    root.insert("created".into(), json!(created));

    let rootfs = root
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    if !rootfs.is_object() {
        *rootfs = json!({"type": "layers", "diff_ids": []});
    }
    if let Some(rootfs) = rootfs.as_object_mut() {
        rootfs.insert("type".into(), json!("layers"));
        let diff_ids = rootfs.entry("diff_ids").or_insert_with(|| json!([]));
        if !diff_ids.is_array() {
            *diff_ids = json!([]);
        }
        if let Some(list) = diff_ids.as_array_mut() {
            list.extend(new_layers.iter().map(|l| json!(l.diff_id)));
        }
    }

    let mut created_by = match options.layers_merged {
        0 => "dcs-agent commit".to_string(),
        n => {
            format!("dcs-agent commit, flattened ({n} layers above the base merged into this one)")
        }
    };
    if !options.changes.is_empty() {
        created_by.push_str(&format!(
            " (changes: {})",
            describe_changes(&options.changes)
        ));
    }
    let mut entry = json!({"created": created, "created_by": created_by});
    if let Some(message) = &options.message {
        entry["comment"] = json!(message);
    }
    let history = root.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    if let Some(list) = history.as_array_mut() {
        list.push(entry);
        // One history entry per layer (none is empty).
        for _ in new_layers.iter().skip(1) {
            list.push(json!({
                "created": created,
                "created_by": "dcs-agent commit (changed while the snapshot was read)"
            }));
        }
    }

    let container_config = root.entry("config").or_insert(Value::Null);
    apply_changes(container_config, &options.changes);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Descriptor;

    fn base() -> BaseImage {
        let layer = Descriptor {
            media_type: media_type::DOCKER_LAYER_GZIP.into(),
            digest: "sha256:aa".into(),
            size: 10,
            annotations: BTreeMap::new(),
            platform: None,
        };
        BaseImage {
            name: "registry.example/base:1".into(),
            manifest_descriptor: Descriptor {
                media_type: media_type::OCI_MANIFEST.into(),
                digest: "sha256:bb".into(),
                size: 100,
                annotations: BTreeMap::new(),
                platform: None,
            },
            manifest: Manifest {
                schema_version: 2,
                media_type: None,
                config: layer.clone(),
                layers: vec![layer],
                annotations: BTreeMap::new(),
            },
            config: json!({
                "architecture": "amd64", "os": "linux", "x-unknown": 1,
                "config": {"Env": ["PATH=/bin", "TOKEN=secret"], "Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:cc"]},
                "history": [{"created_by": "base"}]
            }),
        }
    }

    fn new_layer() -> NewLayer {
        NewLayer {
            descriptor: Descriptor {
                media_type: media_type::OCI_LAYER_ZSTD.into(),
                digest: "sha256:dd".into(),
                size: 5,
                annotations: BTreeMap::new(),
                platform: None,
            },
            diff_id: "sha256:ee".into(),
        }
    }

    #[test]
    fn config_gains_layer_history_and_changes_but_no_secret_in_history() {
        let options = CommitOptions {
            changes: vec![
                "ENV TOKEN=hunter2".parse().unwrap(),
                r#"CMD ["/app", "--password=x"]"#.parse().unwrap(),
            ],
            message: Some("tools for the workshop".into()),
            snapshot_id: Some("snap-1".into()),
            layers_merged: 0,
        };
        let built = build_image(&base(), &[new_layer()], &options, Utc::now());
        let config: Value = serde_json::from_slice(&built.config).unwrap();
        assert_eq!(config["x-unknown"], json!(1));
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!(["sha256:cc", "sha256:ee"])
        );
        let history = config["history"].as_array().unwrap();
        assert_eq!(history.len(), 2);
        let text = serde_json::to_string(&history[1]).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("password"),
            "{text}"
        );
        assert_eq!(history[1]["comment"], json!("tools for the workshop"));
        assert_eq!(config["config"]["Cmd"], json!(["/app", "--password=x"]));
        assert!(
            config["config"]["Env"]
                .as_array()
                .unwrap()
                .contains(&json!("TOKEN=hunter2"))
        );

        let manifest: Manifest = serde_json::from_slice(&built.manifest).unwrap();
        assert_eq!(manifest.layers.len(), 2);
        assert_eq!(manifest.layers[0].media_type, media_type::OCI_LAYER_GZIP);
        assert_eq!(manifest.config.digest, sha256_digest(&built.config));
        assert_eq!(
            manifest.annotations[annotation::BASE_NAME],
            "registry.example/base:1"
        );
        assert_eq!(manifest.annotations[annotation::BASE_DIGEST], "sha256:bb");
        assert_eq!(manifest.annotations[annotation::SNAPSHOT_ID], "snap-1");
        assert!(manifest.annotations.contains_key(annotation::CREATED));
        assert_eq!(
            built.manifest_descriptor.digest,
            sha256_digest(&built.manifest)
        );
    }

    #[test]
    fn a_delta_layer_gets_its_diff_id_and_history_entry() {
        let mut delta = new_layer();
        delta.descriptor.digest = "sha256:ff".into();
        delta.diff_id = "sha256:99".into();
        let built = build_image(
            &base(),
            &[new_layer(), delta],
            &CommitOptions::default(),
            Utc::now(),
        );
        let config: Value = serde_json::from_slice(&built.config).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!(["sha256:cc", "sha256:ee", "sha256:99"])
        );
        assert_eq!(config["history"].as_array().unwrap().len(), 3);
        let manifest: Manifest = serde_json::from_slice(&built.manifest).unwrap();
        let digests: Vec<&str> = manifest.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:aa", "sha256:dd", "sha256:ff"]);
    }
}
