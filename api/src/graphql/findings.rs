//! GraphQL types of the secret scan: findings, reports, acknowledgements.
//! A finding names a path and a rule, never what matched.

use std::sync::Arc;

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use dcs_protocol::ScanReport;
use uuid::Uuid;

use super::context::loader;
use super::int64::Int64;
use super::loaders::ReportsById;
use crate::service::findings::Counts;

/// How much a finding matters.
#[derive(Enum, Copy, Clone, PartialEq, Eq, Debug)]
pub enum FindingSeverity {
    /// A credential or key: blocks the snapshot until it is acknowledged
    /// (`acknowledgeFindings`) or its path is excluded.
    Secret,
    /// Probably unwanted (a huge log or cache): reported, never blocking.
    Warning,
}

impl From<dcs_protocol::Severity> for FindingSeverity {
    fn from(severity: dcs_protocol::Severity) -> Self {
        match severity {
            dcs_protocol::Severity::Secret => Self::Secret,
            dcs_protocol::Severity::Warning => Self::Warning,
        }
    }
}

/// One file a scan rule matched. Never the matched value.
#[derive(SimpleObject, Debug)]
pub struct Finding {
    /// Absolute path in the container, e.g. `/root/.aws/credentials`.
    pub path: String,
    /// The id of the rule that matched, e.g. `aws-access-key-id`.
    pub rule: String,
    /// `SECRET`s block a snapshot; `WARNING`s are only reported.
    pub severity: FindingSeverity,
    /// For rules on a file's content: the line of the match (from 1).
    pub line: Option<i32>,
    /// For size warnings: the bytes at or below the path.
    pub size: Option<Int64>,
    /// For warnings: a glob that, given in `excludes`, leaves the path out.
    pub suggested_exclude: Option<String>,
}

impl From<&dcs_protocol::Finding> for Finding {
    fn from(f: &dcs_protocol::Finding) -> Self {
        Self {
            path: f.path.clone(),
            rule: f.rule.clone(),
            severity: f.severity.into(),
            line: f.line.map(|l| i32::try_from(l).unwrap_or(i32::MAX)),
            size: f.size.map(|s| Int64(i64::try_from(s).unwrap_or(i64::MAX))),
            suggested_exclude: f.suggested_exclude.clone(),
        }
    }
}

/// "Push this finding anyway": its rule and path, exactly as the finding
/// names them.
#[derive(InputObject, Debug)]
pub struct FindingAcknowledgementInput {
    /// The finding's rule id, e.g. `ssh-private-key-file`.
    pub rule: String,
    /// The finding's absolute path, e.g. `/root/.ssh/id_ed25519`.
    pub path: String,
}

impl From<FindingAcknowledgementInput> for dcs_protocol::Acknowledgement {
    fn from(input: FindingAcknowledgementInput) -> Self {
        Self {
            rule: input.rule,
            path: input.path,
        }
    }
}

/// What a secret scan found. The counts are the snapshot row's own; the
/// list is read only when asked for.
#[derive(Debug)]
pub struct FindingReport {
    counts: Counts,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// A snapshot's stored report, loaded (one query per page) when
    /// `findings` or `truncated` is asked for.
    Stored(Uuid),
    /// A report at hand (a preview's).
    Here(Arc<ScanReport>),
}

impl FindingReport {
    /// The stored report of a snapshot, whose row has these counts.
    pub fn stored(snapshot: Uuid, counts: Counts) -> Self {
        Self {
            counts,
            source: Source::Stored(snapshot),
        }
    }

    pub fn here(report: ScanReport) -> Self {
        Self {
            counts: Counts::of(&report),
            source: Source::Here(Arc::new(report)),
        }
    }

    async fn report(&self, ctx: &Context<'_>) -> Result<Arc<ScanReport>> {
        match &self.source {
            Source::Here(report) => Ok(report.clone()),
            Source::Stored(id) => Ok(loader::<ReportsById>(ctx)?
                .load_one(*id)
                .await?
                .unwrap_or_default()),
        }
    }
}

/// What a secret scan found: counts, and the findings themselves.
#[Object]
impl FindingReport {
    /// How many findings the report lists.
    async fn count(&self) -> i32 {
        self.counts.findings
    }

    /// How many of them are `SECRET`s.
    async fn secret_count(&self) -> i32 {
        self.counts.secrets
    }

    /// How many of them are `WARNING`s.
    async fn warning_count(&self) -> i32 {
        self.counts.findings - self.counts.secrets
    }

    /// The scan found more than a report holds (1,000 findings): those
    /// left out are not listed, and cannot be acknowledged one by one;
    /// exclude their paths instead.
    async fn truncated(&self, ctx: &Context<'_>) -> Result<bool> {
        Ok(self.report(ctx).await?.truncated)
    }

    /// The findings, by path, then rule, then line: the first `first`
    /// (default and most 1,000, the most a report holds).
    #[graphql(
        complexity = "crate::graphql::complexity::held_list_complexity(first, child_complexity)"
    )]
    async fn findings(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1000, validator(minimum = 1, maximum = 1000))] first: i32,
    ) -> Result<Vec<Finding>> {
        let report = self.report(ctx).await?;
        Ok(report
            .findings
            .iter()
            .take(first as usize)
            .map(Finding::from)
            .collect())
    }
}
