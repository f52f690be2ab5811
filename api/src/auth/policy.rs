//! What a caller may do: admins everything; speakers only containers in
//! their token's namespaces, and pushes only under the repository prefixes
//! the operator configured for speakers (templates with `{sub}`).

use super::Principal;
use crate::errors::ApiError;

/// The operator's rules for speakers.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// e.g. `registry.example/workshops/{sub}`; a target must be this
    /// repository or below it.
    pub speaker_prefixes: Vec<String>,
}

impl Policy {
    pub fn may_see_namespace(&self, who: &Principal, pod_namespace: Option<&str>) -> bool {
        who.is_admin()
            || pod_namespace.is_some_and(|ns| who.namespaces.iter().any(|allowed| allowed == ns))
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
        assert!(policy.may_see_namespace(&alice, Some("ws")));
        assert!(!policy.may_see_namespace(&alice, Some("other")));
        assert!(!policy.may_see_namespace(&alice, None));
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
