//! Images: a release tag or a digest, never a moving tag.

use k8s_openapi::api::core::v1::Container;

pub(super) fn check_image(what: &str, container: &Container, problems: &mut Vec<String>) {
    match container.image.as_deref() {
        None => problems.push(format!("{what}: has no image")),
        Some(image) => {
            let name_part = image.rsplit('/').next().unwrap_or(image);
            if !image.contains('@') && (!name_part.contains(':') || name_part.ends_with(":latest"))
            {
                problems.push(format!(
                    "{what}: image `{image}` must name a release tag or a digest, not latest"
                ));
            }
        }
    }
}

/// The image's name without registry, tag or digest (`dcs-agent`).
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use crate::deploy_policy::API;
    use crate::deploy_policy::violations::{CONTAINER, assert_caught, doc, set};
    use serde_json::json;

    /// A tag that moves is refused.
    #[test]
    fn catches_a_moving_tag() {
        assert_caught(&[(
            "a moving image tag",
            "must name a release tag or a digest",
            |b, _| {
                set(
                    doc(b, "Deployment", API),
                    &format!("{CONTAINER}/image"),
                    json!("dcs-api:latest"),
                );
            },
        )]);
    }
}
