//! Secret findings: the speaker's acknowledgements (checked here before
//! they are stored and sent with the job) and the agents' scan reports
//! (bounded here before they are stored or shown).
//!
//! A finding names a path and a rule, never what matched (see the
//! protocol's `findings`); nothing here can carry a secret's value. The
//! reports live in the scan columns of `snapshots`, read through the
//! entity `snapshot_findings`, so that lists and lineage walks never load
//! them.

use std::collections::{BTreeSet, HashMap};

use dcs_protocol::{Acknowledgement, ScanReport, Severity};
use entity::prelude::*;
use entity::snapshot_findings;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::errors::{ApiError, ApiResult};
use crate::state::AppState;

/// Acknowledgements one request may carry: as many as a report can list.
pub const MAX_ACKNOWLEDGEMENTS: usize = ScanReport::MAX_FINDINGS;
/// Longest path accepted in an acknowledgement or kept from a report:
/// Linux's `PATH_MAX`.
pub const MAX_PATH_BYTES: usize = 4_096;
/// Longest rule id: the agent's ids are a few words (`aws-access-key-id`).
pub const MAX_RULE_BYTES: usize = 128;
/// Most bytes of findings kept from one report (its JSON form). Real
/// reports are far smaller (a thousand findings with 200-byte paths are
/// about 300 KB); this keeps a hostile or broken agent from parking
/// megabytes on a row that a page of snapshots may load.
pub const MAX_STORED_REPORT_BYTES: usize = 1024 * 1024;

/// The request's acknowledgements, checked: at most
/// [`MAX_ACKNOWLEDGEMENTS`], each an absolute path and a rule id within
/// their caps. Duplicates are dropped; the order is the report's (path,
/// then rule).
pub fn validate_acknowledgements(
    acknowledgements: Vec<Acknowledgement>,
) -> ApiResult<Vec<Acknowledgement>> {
    if acknowledgements.len() > MAX_ACKNOWLEDGEMENTS {
        return Err(ApiError::bad_input(format!(
            "at most {MAX_ACKNOWLEDGEMENTS} acknowledgeFindings per snapshot"
        )));
    }
    let mut unique = BTreeSet::new();
    for ack in acknowledgements {
        check_path(&ack.path)?;
        check_rule(&ack.rule)?;
        unique.insert((ack.path, ack.rule));
    }
    Ok(unique
        .into_iter()
        .map(|(path, rule)| Acknowledgement { rule, path })
        .collect())
}

fn check_path(path: &str) -> ApiResult<()> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::bad_input(format!(
            "an acknowledged path may be at most {MAX_PATH_BYTES} bytes long"
        )));
    }
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ApiError::bad_input(format!(
            "an acknowledged path must be absolute, as the finding names it (\"{path}\" is not)"
        )));
    }
    Ok(())
}

/// Rule ids are the agent's: letters, digits, `-`, `_` and `.`.
fn check_rule(rule: &str) -> ApiResult<()> {
    let valid = !rule.is_empty()
        && rule.len() <= MAX_RULE_BYTES
        && rule
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        let shown: String = rule.chars().take(MAX_RULE_BYTES).collect();
        Err(ApiError::bad_input(format!(
            "\"{shown}\" is not a rule id (at most {MAX_RULE_BYTES} letters, digits, '-', '_' or '.')"
        )))
    }
}

/// A report from an agent, bounded before it is stored or shown: at most
/// `MAX_FINDINGS` findings and [`MAX_STORED_REPORT_BYTES`] of them, none
/// with a path, rule or suggested exclude beyond its cap. What is left out
/// marks the report `truncated`, as the agent marks its own overflow.
pub fn bounded(report: ScanReport) -> ScanReport {
    let mut truncated = report.truncated;
    let mut budget = MAX_STORED_REPORT_BYTES;
    let mut kept = Vec::with_capacity(report.findings.len().min(ScanReport::MAX_FINDINGS));
    for finding in report.findings {
        let fits = finding.path.len() <= MAX_PATH_BYTES
            && finding.rule.len() <= MAX_RULE_BYTES
            && finding
                .suggested_exclude
                .as_ref()
                .is_none_or(|e| e.len() <= MAX_PATH_BYTES);
        // Its JSON form: the strings, and about 100 bytes of field names.
        let cost = finding.path.len()
            + finding.rule.len()
            + finding.suggested_exclude.as_ref().map_or(0, String::len)
            + 100;
        if !fits || kept.len() == ScanReport::MAX_FINDINGS || cost > budget {
            truncated = true;
            continue;
        }
        budget -= cost;
        kept.push(finding);
    }
    ScanReport {
        findings: kept,
        truncated,
    }
}

/// How many findings a report lists, and how many are secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub findings: i32,
    pub secrets: i32,
}

impl Counts {
    pub fn of(report: &ScanReport) -> Self {
        let secrets = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Secret)
            .count();
        // Both at most MAX_FINDINGS once `bounded`.
        Self {
            findings: report.findings.len().min(i32::MAX as usize) as i32,
            secrets: secrets.min(i32::MAX as usize) as i32,
        }
    }
}

/// What the event log keeps of a report: its counts, not its paths (the
/// report itself is on the snapshot row).
pub fn summary(report: &ScanReport) -> serde_json::Value {
    let counts = Counts::of(report);
    serde_json::json!({
        "findingCount": counts.findings,
        "secretFindingCount": counts.secrets,
        "truncated": report.truncated,
    })
}

/// Writes a snapshot's report into its scan column (the counts go with
/// the status change, on the row itself).
pub async fn store_report<C: ConnectionTrait>(
    db: &C,
    snapshot: Uuid,
    report: &ScanReport,
) -> ApiResult<()> {
    let json = serde_json::to_value(report)
        .map_err(|e| ApiError::internal("serialising a scan report", &e))?;
    SnapshotFindings::update_many()
        .col_expr(snapshot_findings::Column::Findings, Expr::value(json))
        .filter(snapshot_findings::Column::Id.eq(snapshot))
        .exec(db)
        .await?;
    Ok(())
}

/// Writes the request's acknowledgements (none: nothing is written).
pub async fn store_acknowledgements<C: ConnectionTrait>(
    db: &C,
    snapshot: Uuid,
    acknowledgements: &[Acknowledgement],
) -> ApiResult<()> {
    if acknowledgements.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_value(acknowledgements)
        .map_err(|e| ApiError::internal("serialising acknowledgements", &e))?;
    SnapshotFindings::update_many()
        .col_expr(
            snapshot_findings::Column::AcknowledgedFindings,
            Expr::value(json),
        )
        .filter(snapshot_findings::Column::Id.eq(snapshot))
        .exec(db)
        .await?;
    Ok(())
}

/// The acknowledgements stored with a snapshot, for its job.
pub async fn acknowledgements<C: ConnectionTrait>(
    db: &C,
    snapshot: Uuid,
) -> ApiResult<Vec<Acknowledgement>> {
    let stored: Option<Option<serde_json::Value>> = SnapshotFindings::find_by_id(snapshot)
        .select_only()
        .column(snapshot_findings::Column::AcknowledgedFindings)
        .into_tuple()
        .one(db)
        .await?;
    match stored.flatten() {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_value(json)
            .map_err(|e| ApiError::internal("reading stored acknowledgements", &e)),
    }
}

/// The reports of these snapshots (those that have one), for the
/// DataLoader behind `Snapshot.findings`: one query for a page.
pub async fn reports(state: &AppState, ids: &[Uuid]) -> ApiResult<HashMap<Uuid, ScanReport>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Option<serde_json::Value>)> = SnapshotFindings::find()
        .select_only()
        .column(snapshot_findings::Column::Id)
        .column(snapshot_findings::Column::Findings)
        .filter(snapshot_findings::Column::Id.is_in(ids.to_vec()))
        .filter(snapshot_findings::Column::Findings.is_not_null())
        .into_tuple()
        .all(&state.db)
        .await?;
    let mut reports = HashMap::new();
    for (id, json) in rows {
        let Some(json) = json else { continue };
        let report = serde_json::from_value(json)
            .map_err(|e| ApiError::internal("reading a stored scan report", &e))?;
        reports.insert(id, report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use dcs_protocol::Finding;

    use super::*;
    use crate::errors::Code;

    fn ack(rule: &str, path: &str) -> Acknowledgement {
        Acknowledgement {
            rule: rule.into(),
            path: path.into(),
        }
    }

    fn refused(acks: Vec<Acknowledgement>) -> String {
        match validate_acknowledgements(acks) {
            Err(e) if e.code == Code::BadUserInput => e.message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn acknowledgements_are_checked_and_deduplicated() {
        let kept = validate_acknowledgements(vec![
            ack("netrc-file", "/root/.netrc"),
            ack("aws-credentials-file", "/root/.aws/credentials"),
            ack("netrc-file", "/root/.netrc"),
        ])
        .unwrap();
        assert_eq!(
            kept,
            [
                ack("aws-credentials-file", "/root/.aws/credentials"),
                ack("netrc-file", "/root/.netrc")
            ]
        );
        let mut many: Vec<_> = (0..MAX_ACKNOWLEDGEMENTS)
            .map(|i| ack("r", &format!("/f{i}")))
            .collect();
        assert_eq!(
            validate_acknowledgements(many.clone()).unwrap().len(),
            1_000
        );
        many.push(ack("r", "/one-more"));
        assert!(refused(many).contains("at most 1000"));

        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(refused(vec![ack("r", &long)]).contains("4096 bytes"));
        assert!(refused(vec![ack("r", "root/.netrc")]).contains("absolute"));
        assert!(refused(vec![ack("r", "")]).contains("absolute"));
        assert!(refused(vec![ack("r", "/a\0b")]).contains("absolute"));
        for rule in [
            "",
            "a b",
            "rule\n",
            "ünïcode",
            &"r".repeat(MAX_RULE_BYTES + 1),
        ] {
            assert!(
                refused(vec![ack(rule, "/a")]).contains("rule id"),
                "{rule:?}"
            );
        }
    }

    fn finding(path: String, severity: Severity) -> Finding {
        Finding {
            path,
            rule: "r".into(),
            severity,
            line: Some(1),
            size: None,
            suggested_exclude: None,
        }
    }

    #[test]
    fn reports_are_bounded_in_count_length_and_bytes() {
        let small = ScanReport {
            findings: vec![
                finding("/a".into(), Severity::Secret),
                finding("/b".into(), Severity::Warning),
            ],
            truncated: false,
        };
        assert_eq!(bounded(small.clone()), small);
        assert_eq!(
            Counts::of(&small),
            Counts {
                findings: 2,
                secrets: 1
            }
        );
        assert_eq!(summary(&small)["secretFindingCount"], 1);

        let many = ScanReport {
            findings: (0..1_500)
                .map(|i| finding(format!("/f{i}"), Severity::Secret))
                .collect(),
            truncated: false,
        };
        let kept = bounded(many);
        assert_eq!(kept.findings.len(), ScanReport::MAX_FINDINGS);
        assert!(kept.truncated);

        let mut long = small.clone();
        long.findings[0].path = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        let kept = bounded(long);
        assert_eq!(kept.findings.len(), 1);
        assert!(kept.truncated);

        // 1,000 findings of 4,000-byte paths are 4 MB: cut at the budget.
        let big = ScanReport {
            findings: (0..1_000)
                .map(|i| finding(format!("/{i:04}{}", "p".repeat(3_995)), Severity::Secret))
                .collect(),
            truncated: false,
        };
        let kept = bounded(big);
        assert!(kept.truncated);
        let bytes = serde_json::to_vec(&kept).unwrap().len();
        assert!(bytes <= MAX_STORED_REPORT_BYTES, "{bytes}");
        assert!(kept.findings.len() > 200, "{}", kept.findings.len());
    }
}
