//! What a caller may do. Admins everything. Speakers: the containers of
//! their own pods inside their token's namespaces (or every pod of those
//! namespaces, when the operator chose namespace-wide access); the
//! snapshots they requested or that were taken of their desktops; and
//! pushes only under the repository prefixes the operator configured for
//! speakers (templates with `{sub}`).
//!
//! Each visibility rule is written here once, twice over: as a predicate on
//! a row already read, and as the SQL condition that selects the same rows
//! (a table test holds the two together). Everything that shows containers
//! or snapshots uses these.

use entity::{container, snapshot};
use sea_orm::{ColumnTrait, Condition};

use super::Principal;
use crate::errors::ApiError;

/// Whose pods a speaker reaches inside their namespaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessScope {
    /// Only pods labelled `dcs.io/owner=<their sub>`.
    #[default]
    Owner,
    /// Every pod of their namespaces: for operators who give each speaker
    /// a namespace of their own.
    Namespace,
}

/// The operator's rules for speakers.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// e.g. `registry.example/workshops/{sub}`; a target must be this
    /// repository or below it.
    pub speaker_prefixes: Vec<String>,
    pub access_scope: AccessScope,
    /// How much each speaker may ask for (`service::quotas` checks them).
    pub quotas: Quotas,
}

/// The operator's limits for each speaker; `None` is no limit. Admins are
/// never limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Snapshots not yet finished at once.
    pub in_flight: Option<u64>,
    /// Snapshots requested in the last 24 hours.
    pub per_day: Option<u64>,
    /// Compressed layer bytes of their pushed snapshots.
    pub bytes: Option<u64>,
}

/// Who a snapshot concerns, from a row or from a change on the bus.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotParties<'a> {
    pub requested_by: &'a str,
    /// The desktop's owner when it was requested.
    pub owner: Option<&'a str>,
    pub pod_namespace: Option<&'a str>,
}

impl<'a> From<&'a snapshot::Model> for SnapshotParties<'a> {
    fn from(s: &'a snapshot::Model) -> Self {
        Self {
            requested_by: &s.requested_by,
            owner: s.owner.as_deref(),
            pod_namespace: s.pod_namespace.as_deref(),
        }
    }
}

impl Policy {
    /// May `who` see and snapshot a container of a pod in `pod_namespace`
    /// owned by `owner` (the pod's `dcs.io/owner`)?
    pub fn may_use_container(
        &self,
        who: &Principal,
        pod_namespace: Option<&str>,
        owner: Option<&str>,
    ) -> bool {
        if who.is_admin() {
            return true;
        }
        let in_namespaces =
            pod_namespace.is_some_and(|ns| who.namespaces.iter().any(|allowed| allowed == ns));
        in_namespaces
            && match self.access_scope {
                AccessScope::Owner => owner == Some(who.sub.as_str()),
                AccessScope::Namespace => true,
            }
    }

    /// The SQL twin of [`Self::may_use_container`] on `containers`.
    pub fn containers_visible(&self, who: &Principal) -> Condition {
        if who.is_admin() {
            return Condition::all();
        }
        let mut condition =
            Condition::all().add(container::Column::PodNamespace.is_in(who.namespaces.clone()));
        if self.access_scope == AccessScope::Owner {
            condition = condition.add(container::Column::Owner.eq(who.sub.clone()));
        }
        condition
    }

    /// May `who` see a snapshot? Its requester, the desktop's owner and
    /// admins may; with namespace-wide access also everyone of its pod's
    /// namespace.
    pub fn may_see_snapshot(&self, who: &Principal, snapshot: SnapshotParties<'_>) -> bool {
        who.is_admin()
            || snapshot.requested_by == who.sub
            || snapshot.owner == Some(who.sub.as_str())
            || (self.access_scope == AccessScope::Namespace
                && snapshot
                    .pod_namespace
                    .is_some_and(|ns| who.namespaces.iter().any(|allowed| allowed == ns)))
    }

    /// The SQL twin of [`Self::may_see_snapshot`] on `snapshots`.
    pub fn snapshots_visible(&self, who: &Principal) -> Condition {
        if who.is_admin() {
            return Condition::all();
        }
        let mut condition = Condition::any()
            .add(snapshot::Column::RequestedBy.eq(who.sub.clone()))
            .add(snapshot::Column::Owner.eq(who.sub.clone()));
        if self.access_scope == AccessScope::Namespace {
            condition = condition.add(snapshot::Column::PodNamespace.is_in(who.namespaces.clone()));
        }
        condition
    }

    /// May `who` cancel a snapshot they can see? Its requester, the
    /// desktop's owner (it is their desktop that gets paused) and admins.
    pub fn may_cancel_snapshot(&self, who: &Principal, snapshot: SnapshotParties<'_>) -> bool {
        who.is_admin()
            || snapshot.requested_by == who.sub
            || snapshot.owner == Some(who.sub.as_str())
    }

    /// May `who` delete a snapshot they can see? Its requester (the image
    /// is theirs) and admins; not the desktop's owner when someone else
    /// took the snapshot.
    pub fn may_delete_snapshot(&self, who: &Principal, snapshot: SnapshotParties<'_>) -> bool {
        who.is_admin() || snapshot.requested_by == who.sub
    }

    /// The repositories a speaker may push under (`check_push`'s
    /// prefixes, `{sub}` filled in); none for admins, who are not limited,
    /// nor for a subject that cannot be a path component.
    pub fn push_prefixes(&self, who: &Principal) -> Vec<String> {
        if who.is_admin() || !is_path_component(&who.sub) {
            return Vec::new();
        }
        self.speaker_prefixes
            .iter()
            .map(|t| {
                t.replace("{sub}", &who.sub)
                    .trim_end_matches('/')
                    .to_string()
            })
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Checks the target repository (`registry/path`, no tag) against the
    /// speaker prefixes.
    pub fn check_push(&self, who: &Principal, repository: &str) -> Result<(), ApiError> {
        if who.is_admin() {
            return Ok(());
        }
        // `sub` goes into a repository path: it must be one path component,
        // or a subject like `bob/x` would reach into bob's prefix.
        if !is_path_component(&who.sub) {
            return Err(ApiError::forbidden(
                "your token's subject cannot name a repository prefix (lowercase letters, digits and . _ - only)",
            ));
        }
        let allowed = self.speaker_prefixes.iter().any(|template| {
            let prefix = template.replace("{sub}", &who.sub);
            let prefix = prefix.trim_end_matches('/');
            !prefix.is_empty()
                && (repository == prefix
                    || repository
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/')))
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "speakers may push only under {}",
                self.speaker_prefixes
                    .iter()
                    .map(|t| t.replace("{sub}", &who.sub))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }
}

/// `[a-z0-9]+([._-][a-z0-9]+)*`: a repository path component.
fn is_path_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| alnum(b) || b"._-".contains(&b))
        && !bytes.windows(2).any(|w| !alnum(w[0]) && !alnum(w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn prefixes_match_on_path_boundaries() {
        let policy = Policy {
            speaker_prefixes: vec!["reg:5000/workshops/{sub}/".into()],
            ..Policy::default()
        };
        let alice = Principal {
            sub: "alice".into(),
            role: Role::Speaker,
            namespaces: vec!["ws".into()],
        };
        assert!(
            policy
                .check_push(&alice, "reg:5000/workshops/alice")
                .is_ok()
        );
        assert!(
            policy
                .check_push(&alice, "reg:5000/workshops/alice/k8s")
                .is_ok()
        );
        assert!(
            policy
                .check_push(&alice, "reg:5000/workshops/alice-evil")
                .is_err()
        );
        assert!(
            policy
                .check_push(&alice, "reg:5000/workshops/bob/x")
                .is_err()
        );
        let sneaky = Principal {
            sub: "bob/x".into(),
            ..alice.clone()
        };
        assert!(
            policy
                .check_push(&sneaky, "reg:5000/workshops/bob/x")
                .is_err()
        );
    }
}

/// The visibility rules, as a table, and their SQL twins against it.
#[cfg(test)]
mod visibility {
    use super::*;
    use crate::auth::Role;
    use entity::{NodeState, SnapshotStatus, node};
    use sea_orm::{ActiveModelTrait, Database, EntityTrait, QueryFilter, Set};
    use uuid::Uuid;

    use AccessScope::{Namespace, Owner};

    fn speaker(sub: &str) -> Principal {
        Principal {
            sub: sub.into(),
            role: Role::Speaker,
            namespaces: vec!["ws".into()],
        }
    }

    fn admin() -> Principal {
        Principal {
            sub: "root".into(),
            role: Role::Admin,
            namespaces: vec![],
        }
    }

    fn policy(access_scope: AccessScope) -> Policy {
        Policy {
            access_scope,
            ..Policy::default()
        }
    }

    /// (scope, pod namespace, pod owner) -> may alice (speaker of `ws`)
    /// use the container?
    const CONTAINERS: &[(AccessScope, Option<&str>, Option<&str>, bool)] = &[
        (Owner, Some("ws"), Some("alice"), true),
        (Owner, Some("ws"), Some("bob"), false),
        (Owner, Some("ws"), None, false),
        (Owner, Some("other"), Some("alice"), false),
        (Owner, None, Some("alice"), false),
        (Namespace, Some("ws"), Some("alice"), true),
        (Namespace, Some("ws"), Some("bob"), true),
        (Namespace, Some("ws"), None, true),
        (Namespace, Some("other"), Some("alice"), false),
        (Namespace, None, Some("alice"), false),
    ];

    /// (scope, requested by, desktop owner, pod namespace) -> may alice
    /// see the snapshot, and cancel it?
    #[allow(clippy::type_complexity)]
    const SNAPSHOTS: &[(AccessScope, &str, Option<&str>, Option<&str>, bool, bool)] = &[
        (Owner, "alice", Some("alice"), Some("ws"), true, true),
        // Requested by alice (an earlier grant), desktop of bob.
        (Owner, "alice", Some("bob"), Some("ws"), true, true),
        // Requested by an admin, of alice's desktop.
        (Owner, "root", Some("alice"), Some("ws"), true, true),
        // Bob's snapshot of bob's desktop, next door.
        (Owner, "bob", Some("bob"), Some("ws"), false, false),
        (Owner, "bob", None, Some("ws"), false, false),
        (Owner, "bob", Some("bob"), Some("other"), false, false),
        (Namespace, "bob", Some("bob"), Some("ws"), true, false),
        (Namespace, "bob", None, Some("ws"), true, false),
        (Namespace, "bob", Some("bob"), Some("other"), false, false),
        (Namespace, "bob", Some("alice"), Some("other"), true, true),
        (Namespace, "alice", None, None, true, true),
    ];

    #[test]
    fn containers_table() {
        let alice = speaker("alice");
        for &(scope, ns, owner, expected) in CONTAINERS {
            let policy = policy(scope);
            assert_eq!(
                policy.may_use_container(&alice, ns, owner),
                expected,
                "{scope:?} {ns:?} {owner:?}"
            );
            assert!(policy.may_use_container(&admin(), ns, owner));
        }
    }

    #[test]
    fn snapshots_table() {
        let alice = speaker("alice");
        for &(scope, requested_by, owner, ns, see, cancel) in SNAPSHOTS {
            let policy = policy(scope);
            let parties = SnapshotParties {
                requested_by,
                owner,
                pod_namespace: ns,
            };
            let case = format!("{scope:?} {requested_by} {owner:?} {ns:?}");
            assert_eq!(policy.may_see_snapshot(&alice, parties), see, "{case}");
            assert_eq!(
                see && policy.may_cancel_snapshot(&alice, parties),
                cancel,
                "{case}"
            );
            assert!(policy.may_see_snapshot(&admin(), parties));
            assert!(policy.may_cancel_snapshot(&admin(), parties));
            assert_eq!(
                policy.may_delete_snapshot(&alice, parties),
                requested_by == "alice",
                "{case}"
            );
            assert!(policy.may_delete_snapshot(&admin(), parties));
        }
    }

    /// The SQL conditions select exactly the rows the predicates accept,
    /// on every row of both tables.
    #[tokio::test]
    async fn sql_twins_agree_with_the_predicates() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Database::connect(&url).await.unwrap();
        migration::run_migrations(&db).await.unwrap();
        let now = crate::clock::now();
        node::ActiveModel {
            name: Set("n".into()),
            instance_id: Set(Uuid::new_v4()),
            url: Set("http://n".into()),
            version: Set("0".into()),
            containerd_version: Set("1.6".into()),
            max_concurrent_jobs: Set(1),
            registered_at: Set(now),
            last_seen_at: Set(now),
            state: Set(NodeState::Ready),
        }
        .insert(&db)
        .await
        .unwrap();
        for (i, &(_, ns, owner, _)) in CONTAINERS.iter().enumerate() {
            container::ActiveModel {
                node: Set("n".into()),
                id: Set(format!("c{i}")),
                image: Set("i".into()),
                image_digest: Set(None),
                state: Set("running".into()),
                snapshotter: Set("overlayfs".into()),
                pod_name: Set(Some("p".into())),
                pod_namespace: Set(ns.map(String::from)),
                container_name: Set(Some("d".into())),
                updated_at: Set(now),
                owner: Set(owner.map(String::from)),
            }
            .insert(&db)
            .await
            .unwrap();
        }
        for (i, &(_, requested_by, owner, ns, _, _)) in SNAPSHOTS.iter().enumerate() {
            snapshot::ActiveModel {
                id: Set(Uuid::new_v4()),
                requested_by: Set(requested_by.into()),
                owner: Set(owner.map(String::from)),
                node: Set("n".into()),
                container_id: Set(format!("c{i}")),
                pod_namespace: Set(ns.map(String::from)),
                target: Set("r/x:1".into()),
                repository: Set("r/x".into()),
                options: Set(serde_json::json!({})),
                status: Set(SnapshotStatus::Pushed),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
        }
        let containers = container::Entity::find().all(&db).await.unwrap();
        let snapshots = snapshot::Entity::find().all(&db).await.unwrap();
        for scope in [Owner, Namespace] {
            let policy = policy(scope);
            for who in [speaker("alice"), speaker("bob"), speaker("carol"), admin()] {
                let mut selected: Vec<String> = container::Entity::find()
                    .filter(policy.containers_visible(&who))
                    .all(&db)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.id)
                    .collect();
                let mut expected: Vec<String> = containers
                    .iter()
                    .filter(|c| {
                        policy.may_use_container(
                            &who,
                            c.pod_namespace.as_deref(),
                            c.owner.as_deref(),
                        )
                    })
                    .map(|c| c.id.clone())
                    .collect();
                selected.sort();
                expected.sort();
                assert_eq!(selected, expected, "containers, {scope:?}, {}", who.sub);

                let mut selected: Vec<Uuid> = snapshot::Entity::find()
                    .filter(policy.snapshots_visible(&who))
                    .all(&db)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|s| s.id)
                    .collect();
                let mut expected: Vec<Uuid> = snapshots
                    .iter()
                    .filter(|s| policy.may_see_snapshot(&who, (*s).into()))
                    .map(|s| s.id)
                    .collect();
                selected.sort();
                expected.sort();
                assert_eq!(selected, expected, "snapshots, {scope:?}, {}", who.sub);
            }
        }
    }
}
