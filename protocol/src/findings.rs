//! What the agent's secret scan reports, and the preview of a snapshot.
//!
//! A finding names a file and the rule it broke, never what matched: no
//! field here can hold a secret's value, so nothing that stores or forwards
//! these types (the API's database, its webhooks, logs) can leak one.

use serde::{Deserialize, Serialize};

/// `SECRET` findings block a commit until acknowledged or excluded;
/// `WARNING`s (huge logs and caches) are only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Secret,
    Warning,
}

/// One file a rule matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Absolute path in the container (`/root/.aws/credentials`).
    pub path: String,
    /// The rule's id in the agent's rule file (`aws-access-key-id`).
    pub rule: String,
    pub severity: Severity,
    /// For rules on a file's content: the 1-based line of the match.
    #[serde(default)]
    pub line: Option<u32>,
    /// For size warnings: the bytes below the path.
    #[serde(default)]
    pub size: Option<u64>,
    /// For warnings: a glob that, given as an exclude, leaves this out.
    #[serde(default)]
    pub suggested_exclude: Option<String>,
}

/// A speaker's "I know, push it anyway" for one finding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub rule: String,
    /// Absolute path in the container, as the finding names it.
    pub path: String,
}

impl Acknowledgement {
    pub fn covers(&self, finding: &Finding) -> bool {
        self.rule == finding.rule && self.path == finding.path
    }
}

/// All findings of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// Sorted by path, then rule, then line.
    pub findings: Vec<Finding>,
    /// More findings were made than a report holds; those left out are not
    /// listed (and cannot be acknowledged one by one: exclude their paths).
    #[serde(default)]
    pub truncated: bool,
}

impl ScanReport {
    /// At most this many findings travel in one report; a desktop with more
    /// has a problem that a longer list does not explain better.
    pub const MAX_FINDINGS: usize = 1_000;

    pub fn secrets(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Secret)
    }

    pub fn has_secrets(&self) -> bool {
        self.secrets().next().is_some()
    }

    /// The secrets no acknowledgement covers: what blocks a commit.
    pub fn unacknowledged<'a>(
        &'a self,
        acknowledged: &'a [Acknowledgement],
    ) -> impl Iterator<Item = &'a Finding> + 'a {
        self.secrets()
            .filter(move |f| !acknowledged.iter().any(|a| a.covers(f)))
    }
}

/// A path and the bytes of regular files at or below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathSize {
    pub path: String,
    pub bytes: u64,
}

/// What one exclude pattern kept out of the layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedBy {
    pub pattern: String,
    /// Entries the pattern matched (a matched directory counts once; what
    /// is below it is in `files` and `bytes`).
    pub entries: u64,
    /// Regular files left out, below matched directories included.
    pub files: u64,
    pub bytes: u64,
}

/// What a snapshot of the container would hold now, as the commit would
/// write it (same walk, same excludes), without writing or pausing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    /// Regular files (each inode once; its other names are `links`).
    pub files: u64,
    pub directories: u64,
    /// Deletions of the image's files (whiteouts and opaque directories).
    pub whiteouts: u64,
    /// Symbolic links and further names of a hard-linked file.
    pub links: u64,
    /// Devices and FIFOs (sockets are never written into a layer).
    pub other: u64,
    /// Bytes of the regular files' contents.
    pub total_bytes: u64,
    /// The 20 biggest files, biggest first.
    pub biggest_files: Vec<PathSize>,
    /// The 20 directories with the most bytes below them, biggest first.
    pub biggest_directories: Vec<PathSize>,
    /// One entry per exclude pattern in force, in the order they apply.
    pub excluded: Vec<ExcludedBy>,
    pub findings: ScanReport,
}

/// A preview of a container's changes: the same container selection and
/// excludes as a `JobRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewRequest {
    pub container_id: String,
    #[serde(default)]
    pub excludes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(path: &str, rule: &str, severity: Severity) -> Finding {
        Finding {
            path: path.into(),
            rule: rule.into(),
            severity,
            line: None,
            size: None,
            suggested_exclude: None,
        }
    }

    #[test]
    fn findings_have_a_stable_wire_form() {
        let mut f = finding("/root/.env", "generic-assignment", Severity::Secret);
        f.line = Some(3);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "path": "/root/.env", "rule": "generic-assignment", "severity": "SECRET",
                "line": 3, "size": null, "suggestedExclude": null
            })
        );
        assert_eq!(serde_json::from_value::<Finding>(json).unwrap(), f);
        assert_eq!(
            serde_json::to_value(Severity::Warning).unwrap(),
            serde_json::json!("WARNING")
        );
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let f: Finding =
            serde_json::from_str(r#"{"path":"/a","rule":"r","severity":"WARNING"}"#).unwrap();
        assert_eq!(f, finding("/a", "r", Severity::Warning));
        let report: ScanReport = serde_json::from_str(r#"{"findings":[]}"#).unwrap();
        assert_eq!(report, ScanReport::default());
    }

    #[test]
    fn unknown_severities_are_refused() {
        assert!(serde_json::from_str::<Severity>(r#""secret""#).is_err());
        assert!(serde_json::from_str::<Severity>(r#""INFO""#).is_err());
    }

    #[test]
    fn an_acknowledgement_covers_its_rule_and_path_only() {
        let report = ScanReport {
            findings: vec![
                finding(
                    "/root/.ssh/id_rsa",
                    "ssh-private-key-file",
                    Severity::Secret,
                ),
                finding("/root/.env", "generic-assignment", Severity::Secret),
                finding("/var/log/big", "huge-log", Severity::Warning),
            ],
            truncated: false,
        };
        assert!(report.has_secrets());
        assert_eq!(report.secrets().count(), 2);
        let open = |acks: &[Acknowledgement]| -> Vec<String> {
            report
                .unacknowledged(acks)
                .map(|f| f.path.clone())
                .collect()
        };
        let ack = |rule: &str, path: &str| Acknowledgement {
            rule: rule.into(),
            path: path.into(),
        };
        assert_eq!(open(&[]), ["/root/.ssh/id_rsa", "/root/.env"]);
        // Same path, another rule; same rule, another path; a path without
        // its leading slash: none of them covers anything.
        assert_eq!(
            open(&[
                ack("generic-assignment", "/root/.ssh/id_rsa"),
                ack("ssh-private-key-file", "/root/.env"),
                ack("generic-assignment", "root/.env"),
            ]),
            ["/root/.ssh/id_rsa", "/root/.env"]
        );
        assert_eq!(
            open(&[ack("generic-assignment", "/root/.env")]),
            ["/root/.ssh/id_rsa"]
        );
        // Warnings never need one.
        assert!(
            open(&[
                ack("generic-assignment", "/root/.env"),
                ack("ssh-private-key-file", "/root/.ssh/id_rsa"),
            ])
            .is_empty()
        );
    }

    #[test]
    fn previews_round_trip() {
        let preview = Preview {
            files: 2,
            directories: 1,
            whiteouts: 1,
            links: 1,
            other: 0,
            total_bytes: 10,
            biggest_files: vec![PathSize {
                path: "/a".into(),
                bytes: 10,
            }],
            biggest_directories: vec![PathSize {
                path: "/".into(),
                bytes: 10,
            }],
            excluded: vec![ExcludedBy {
                pattern: "/tmp/*".into(),
                entries: 0,
                files: 0,
                bytes: 0,
            }],
            findings: ScanReport::default(),
        };
        let json = serde_json::to_value(&preview).unwrap();
        assert_eq!(json["totalBytes"], 10);
        assert_eq!(json["biggestFiles"][0]["bytes"], 10);
        assert_eq!(json["excluded"][0]["pattern"], "/tmp/*");
        assert_eq!(serde_json::from_value::<Preview>(json).unwrap(), preview);
        let request: PreviewRequest = serde_json::from_str(r#"{"containerId":"c1"}"#).unwrap();
        assert!(request.excludes.is_empty());
    }
}
