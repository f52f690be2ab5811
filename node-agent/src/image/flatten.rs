//! Flatten: a new image made of its lineage base's layers plus ONE layer
//! holding everything above them (every snapshot layer and the
//! container's current changes, deletions applied).
//!
//! The base is named by the API (the first image of the lineage that no
//! snapshot made; for rows older than lineage bases, the oldest image it
//! knows) but never trusted alone: a pod may run an image with forged
//! annotations, and a row may be older than the image. The base's manifest
//! must list exactly the leading layers of the image the container runs,
//! digest for digest, and the container's snapshot must be built on that
//! image's layers. The new layer is then the difference between
//! containerd's committed snapshot of the base's layers (named by their
//! chain ID, as containerd's unpacker names it) and the container.

use serde_json::{Value, json};

use super::base::{BaseImage, pick_platform};
use super::{Descriptor, Index, Manifest, media_type, sha256_digest};
use crate::containerd::Containerd;
use crate::registry::{self, Pusher, RegistryError, RegistryOptions};

/// Manifests and indexes are a few KiB; anything past this is not one.
const MAX_MANIFEST: usize = 4 << 20;

/// The wanted base as the API names it.
pub use dcs_protocol::FlattenBase as WantedBase;

/// A flatten base, checked against the image the container runs.
#[derive(Debug, Clone)]
pub struct FlattenBase {
    /// The base image's reference, as the API named it.
    pub name: String,
    /// Its platform manifest.
    pub manifest_descriptor: Descriptor,
    /// How many leading layers of the running image are the base's.
    pub layers: usize,
    /// containerd's chain ID of those layers: the committed snapshot the
    /// new layer is the difference from (empty for a base without layers).
    pub chain_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("the flatten base \"{name}\" is not an image reference: {reason}")]
    BadReference { name: String, reason: String },
    #[error(
        "the flatten base {name}@{digest} could not be read, neither from containerd nor from its registry: {reason}"
    )]
    Unreadable {
        name: String,
        digest: String,
        reason: String,
    },
    #[error("the flatten base {name}@{digest} is not a usable image: {reason}")]
    Unusable {
        name: String,
        digest: String,
        reason: String,
    },
    #[error("the flatten base {name}@{digest} is not the base of the image {image}: {reason}")]
    NotTheBase {
        name: String,
        digest: String,
        image: String,
        reason: String,
    },
}

impl FlattenBase {
    /// Reads the wanted base's manifest (containerd's content store first,
    /// then its registry) and checks it against `running`.
    /// `snapshot_parent` is the committed snapshot the container's
    /// snapshot was made on.
    pub async fn resolve(
        client: &Containerd,
        running: &BaseImage,
        snapshot_parent: &str,
        wanted: &WantedBase,
        registry: &RegistryOptions,
    ) -> Result<Self, FlattenError> {
        let unreadable = |reason: String| FlattenError::Unreadable {
            name: wanted.image.clone(),
            digest: wanted.digest.clone(),
            reason,
        };
        let unusable = |reason: String| FlattenError::Unusable {
            name: wanted.image.clone(),
            digest: wanted.digest.clone(),
            reason,
        };
        let source = ManifestSource::new(client, &wanted.image, registry)?;
        let bytes = source.read(&wanted.digest).await.map_err(unreadable)?;
        let (descriptor, manifest) = match parse(&bytes).map_err(unusable)? {
            Document::Manifest(manifest) => (
                descriptor_of(&wanted.digest, &bytes, manifest.media_type.as_deref()),
                manifest,
            ),
            Document::Index(index) => {
                let Some(chosen) = pick_platform(&index) else {
                    return Err(unusable(
                        "its index has no manifest for this platform".into(),
                    ));
                };
                let bytes = source.read(&chosen.digest).await.map_err(unreadable)?;
                match parse(&bytes).map_err(unusable)? {
                    Document::Manifest(manifest) => (chosen, manifest),
                    Document::Index(_) => {
                        return Err(unusable("its index names another index".into()));
                    }
                }
            }
        };
        let not_the_base = |reason: String| FlattenError::NotTheBase {
            name: wanted.image.clone(),
            digest: wanted.digest.clone(),
            image: running.name.clone(),
            reason,
        };
        let layers =
            leading_layers(&manifest.layers, &running.manifest.layers).map_err(not_the_base)?;
        let diff_ids = diff_ids(&running.config);
        if diff_ids.len() != running.manifest.layers.len() {
            return Err(not_the_base(format!(
                "the image's config lists {} diff_ids for {} layers",
                diff_ids.len(),
                running.manifest.layers.len()
            )));
        }
        if let Some(odd) = diff_ids.iter().find(|d| !is_sha256_digest(d)) {
            return Err(not_the_base(format!(
                "the image's config has a diff_id that is not a sha256 digest: {odd:.80}"
            )));
        }
        // The image record is looked up by name, and a tag may have moved
        // since the container was made: its snapshot must be this image's.
        if chain_id(&diff_ids) != snapshot_parent {
            return Err(not_the_base(
                "the container's file system was not made from this image's layers (was the \
                 image's tag moved since the container started?)"
                    .to_string(),
            ));
        }
        Ok(Self {
            name: wanted.image.clone(),
            manifest_descriptor: descriptor,
            layers,
            chain_id: chain_id(&diff_ids[..layers]),
        })
    }

    /// `running` cut down to this base: its layers, diff_ids and history,
    /// named as the base (so the new manifest's `base.*` annotations name
    /// the image whose layers it carries). Everything else of the running
    /// image's config (environment, command, labels: what earlier
    /// snapshots set) stays.
    pub fn cut(&self, running: &BaseImage) -> BaseImage {
        let mut manifest = running.manifest.clone();
        manifest.layers.truncate(self.layers);
        let mut config = running.config.clone();
        if let Some(list) = config
            .pointer_mut("/rootfs/diff_ids")
            .and_then(Value::as_array_mut)
        {
            list.truncate(self.layers);
        }
        if let Some(list) = config.get_mut("history").and_then(Value::as_array_mut) {
            cut_history(list, self.layers);
        }
        BaseImage {
            name: self.name.clone(),
            manifest_descriptor: self.manifest_descriptor.clone(),
            manifest,
            config,
        }
    }
}

/// Where a base's manifests are read: containerd first (no network, and
/// the usual case on the node that made the lineage's first snapshot),
/// else the base's registry with the agent's credentials.
struct ManifestSource<'a> {
    client: &'a Containerd,
    registry: Option<Pusher>,
    /// Why the registry cannot be asked, for the error.
    registry_error: Option<String>,
}

impl<'a> ManifestSource<'a> {
    fn new(
        client: &'a Containerd,
        name: &str,
        options: &RegistryOptions,
    ) -> Result<Self, FlattenError> {
        let parsed =
            registry::reference::parse(name).map_err(|reason| FlattenError::BadReference {
                name: name.to_string(),
                reason,
            })?;
        let (registry, registry_error) = match Pusher::new(registry::to_reference(&parsed), options)
        {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(Self {
            client,
            registry,
            registry_error,
        })
    }

    async fn read(&self, digest: &str) -> Result<Vec<u8>, String> {
        match self.client.content_size(digest).await {
            Ok(Some(size)) if size as u64 > MAX_MANIFEST as u64 => {
                return Err(format!(
                    "{digest} is {size} bytes, more than a manifest may have"
                ));
            }
            Ok(Some(_)) => {
                if let Ok(bytes) = self.client.read_blob("flatten base manifest", digest).await {
                    return Ok(bytes);
                }
            }
            Ok(None) | Err(_) => {}
        }
        let Some(registry) = &self.registry else {
            return Err(self.registry_error.clone().unwrap_or_default());
        };
        registry
            .fetch_manifest(digest, MAX_MANIFEST)
            .await
            .map_err(|e: RegistryError| e.to_string())
    }
}

enum Document {
    Manifest(Manifest),
    Index(Index),
}

fn parse(bytes: &[u8]) -> Result<Document, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
    let result = if value.get("manifests").is_some() {
        serde_json::from_value(value).map(Document::Index)
    } else {
        serde_json::from_value(value).map(Document::Manifest)
    };
    result.map_err(|e| format!("not a manifest: {e}"))
}

fn descriptor_of(digest: &str, bytes: &[u8], declared: Option<&str>) -> Descriptor {
    Descriptor {
        media_type: declared.unwrap_or(media_type::OCI_MANIFEST).to_string(),
        digest: digest.to_string(),
        size: bytes.len() as i64,
        annotations: Default::default(),
        platform: None,
    }
}

/// How many layers `base` has, once they are checked to be the leading
/// layers of `image`, digest for digest.
fn leading_layers(base: &[Descriptor], image: &[Descriptor]) -> Result<usize, String> {
    if base.len() > image.len() {
        return Err(format!(
            "it has {} layers, the image only {}",
            base.len(),
            image.len()
        ));
    }
    if let Some((n, (ours, theirs))) = base
        .iter()
        .zip(image)
        .enumerate()
        .find(|(_, (b, i))| b.digest != i.digest)
    {
        return Err(format!(
            "layer {} is {} in the base and {} in the image",
            n + 1,
            ours.digest,
            theirs.digest
        ));
    }
    Ok(base.len())
}

fn diff_ids(config: &Value) -> Vec<String> {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|d| d.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The OCI chain ID of layers with these diff_ids: the first diff_id, then
/// `sha256(previous + " " + next)` for each next one.
fn chain_id(diff_ids: &[String]) -> String {
    let mut layers = diff_ids.iter();
    let Some(first) = layers.next() else {
        return String::new();
    };
    layers.fold(first.clone(), |chain, next| {
        sha256_digest(format!("{chain} {next}").as_bytes())
    })
}

/// Keeps the history of the first `layers` layers: every entry before the
/// one of layer `layers + 1` (entries marked `empty_layer` made no layer).
/// A history that does not describe that many layers is left as it is.
fn cut_history(history: &mut Vec<Value>, layers: usize) {
    let mut seen = 0;
    let cut = history.iter().position(|entry| {
        let empty = entry.get("empty_layer") == Some(&json!(true));
        if !empty {
            seen += 1;
        }
        seen > layers
    });
    if let Some(cut) = cut {
        history.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest: &str) -> Descriptor {
        Descriptor {
            media_type: media_type::OCI_LAYER_GZIP.into(),
            digest: digest.into(),
            size: 1,
            annotations: Default::default(),
            platform: None,
        }
    }

    #[test]
    fn the_base_must_be_the_images_leading_layers() {
        let image = [layer("sha256:a"), layer("sha256:b"), layer("sha256:c")];
        assert_eq!(leading_layers(&image[..1], &image), Ok(1));
        assert_eq!(leading_layers(&[], &image), Ok(0));
        assert_eq!(leading_layers(&image, &image), Ok(3));
        let forged = [layer("sha256:a"), layer("sha256:x")];
        let refused = leading_layers(&forged, &image).unwrap_err();
        assert!(refused.contains("layer 2 is sha256:x"), "{refused}");
        let longer = [image.as_slice(), &[layer("sha256:d")]].concat();
        assert!(leading_layers(&longer, &image).is_err());
    }

    #[test]
    fn only_sha256_digests_are_diff_ids() {
        assert!(is_sha256_digest(&format!("sha256:{}", "a".repeat(64))));
        for odd in [
            "",
            "sha256:",
            "sha512:aa",
            "sha256:../../etc",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(!is_sha256_digest(odd), "{odd}");
        }
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        assert_eq!(chain_id(&[]), "");
        assert_eq!(chain_id(&["sha256:a".into()]), "sha256:a");
        let two = sha256_digest(b"sha256:a sha256:b");
        assert_eq!(chain_id(&["sha256:a".into(), "sha256:b".into()]), two);
        let three = sha256_digest(format!("{two} sha256:c").as_bytes());
        assert_eq!(
            chain_id(&["sha256:a".into(), "sha256:b".into(), "sha256:c".into()]),
            three
        );
    }

    #[test]
    fn history_keeps_the_base_entries_and_their_empty_ones() {
        let mut history = vec![
            json!({"created_by": "ADD rootfs"}),
            json!({"created_by": "ENV A=1", "empty_layer": true}),
            json!({"created_by": "RUN make"}),
            json!({"created_by": "CMD sh", "empty_layer": true}),
            json!({"created_by": "dcs-agent commit"}),
            json!({"created_by": "dcs-agent commit (changed while the snapshot was read)"}),
        ];
        cut_history(&mut history, 2);
        let kept: Vec<&str> = history
            .iter()
            .map(|e| e["created_by"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["ADD rootfs", "ENV A=1", "RUN make", "CMD sh"]);
        // Fewer entries than layers: left alone.
        let mut short = vec![json!({"created_by": "x"})];
        cut_history(&mut short, 3);
        assert_eq!(short.len(), 1);
    }

    #[test]
    fn cutting_keeps_the_config_but_drops_the_layers_above_the_base() {
        let running = BaseImage {
            name: "registry.example/w/desk:v2".into(),
            manifest_descriptor: layer("sha256:m2"),
            manifest: Manifest {
                schema_version: 2,
                media_type: None,
                config: layer("sha256:cfg"),
                layers: vec![layer("sha256:a"), layer("sha256:b"), layer("sha256:c")],
                annotations: Default::default(),
            },
            config: json!({
                "config": {"Env": ["SET_BY_V1=1"]},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:1", "sha256:2", "sha256:3"]},
                "history": [{"created_by": "base"}, {"created_by": "v1"}, {"created_by": "v2"}]
            }),
        };
        let base = FlattenBase {
            name: "registry.example/base:1".into(),
            manifest_descriptor: layer("sha256:m0"),
            layers: 1,
            chain_id: "sha256:1".into(),
        };
        let cut = base.cut(&running);
        assert_eq!(cut.name, "registry.example/base:1");
        assert_eq!(cut.manifest_descriptor.digest, "sha256:m0");
        assert_eq!(cut.manifest.layers, vec![layer("sha256:a")]);
        assert_eq!(cut.config["rootfs"]["diff_ids"], json!(["sha256:1"]));
        assert_eq!(cut.config["history"], json!([{"created_by": "base"}]));
        assert_eq!(cut.config["config"]["Env"], json!(["SET_BY_V1=1"]));
    }

    #[test]
    fn documents_are_told_apart_and_garbage_is_refused() {
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"manifests":[]}"#),
            Ok(Document::Index(_))
        ));
        let manifest = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:c","size":1},"layers":[]}"#;
        assert!(matches!(parse(manifest), Ok(Document::Manifest(_))));
        for garbage in [&b"[]"[..], b"{}", b"not json", b"{\"manifests\": 3}"] {
            assert!(parse(garbage).is_err());
        }
    }
}
