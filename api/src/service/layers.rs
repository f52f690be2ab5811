//! Flatten and the layer budget.
//!
//! Each snapshot adds a layer (two, when the agent reads the bulk while the
//! desktop runs and then what changed meanwhile) on top of the image the
//! desktop ran, so a lineage v1 -> v2 -> v3 ... piles them up. A flattened
//! snapshot's image is instead its lineage base's layers (the first image
//! of the lineage that no snapshot made) plus one layer holding everything
//! above them. The operator's budget (`--layer-budget`) caps the layers
//! above the base: a snapshot that would go past it is flattened, and one
//! that has room for one more layer only is made with exactly one.

use entity::snapshot;

/// The layer budget: 20 layers above the lineage base, by default.
pub const DEFAULT_LAYER_BUDGET: u32 = 20;

/// How the agent is to build a new snapshot's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPlan {
    /// As it sees fit: one layer, or a bulk layer and a delta layer.
    Free,
    /// Exactly one new layer: the budget has room for one only.
    SingleLayer,
    /// The lineage base's layers plus one.
    Flatten,
}

/// The plan for a snapshot on top of an image with `above` layers above
/// its lineage base (0 when there is no parent, or the count is unknown),
/// under `budget` (0: no automatic flattening). Asked for, a flatten
/// always happens.
pub fn plan(flatten_asked: bool, above: u32, budget: u32) -> LayerPlan {
    let limited = budget > 0;
    if flatten_asked || (limited && above.saturating_add(1) > budget) {
        LayerPlan::Flatten
    } else if limited && above.saturating_add(2) > budget {
        LayerPlan::SingleLayer
    } else {
        LayerPlan::Free
    }
}

/// Layers of a snapshot's image above its lineage base, from its
/// `layer_count` and `lineage_base_layers`; `None` when either is unknown
/// (or they contradict each other).
pub fn layers_above_base(
    layer_count: Option<i32>,
    lineage_base_layers: Option<i32>,
) -> Option<i32> {
    let (count, base) = (layer_count?, lineage_base_layers?);
    (base >= 0 && count >= base).then(|| count - base)
}

/// The lineage base of a new snapshot of a container that runs
/// `image`/`digest`: the parent's (its own base image when its lineage
/// columns are unknown, as on older rows), or, without a parent, that
/// image itself. `(image, digest)`.
pub fn lineage_base(
    parent: Option<&snapshot::Model>,
    image: &str,
    digest: Option<&str>,
) -> (Option<String>, Option<String>) {
    match parent {
        None => (Some(image.to_string()), digest.map(String::from)),
        Some(p) if p.lineage_base_image.is_some() && p.lineage_base_digest.is_some() => {
            (p.lineage_base_image.clone(), p.lineage_base_digest.clone())
        }
        Some(p) => (p.base_image.clone(), p.base_digest.clone()),
    }
}

/// Where the lineage base's layers end in a pushed image, from what the
/// agent reported: a flattened image has them all but its last layer; any
/// other keeps its parent's (`Some(parent's count)` for a snapshot with a
/// parent, `None` without one), or, without a parent, those of the image
/// the container ran (`base_layer_count`). `None` when unknown, or when
/// the counts contradict each other (more base layers than layers).
pub fn lineage_base_layers(
    flattened: bool,
    layer_count: Option<i32>,
    parent: Option<Option<i32>>,
    base_layer_count: Option<i32>,
) -> Option<i32> {
    let base = if flattened {
        layer_count?.checked_sub(1)?
    } else {
        match parent {
            Some(parents) => parents?,
            None => base_layer_count?,
        }
    };
    let fits = base >= 0 && layer_count.is_none_or(|count| base <= count);
    fits.then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_flattens_past_it_and_keeps_one_layer_at_its_edge() {
        use LayerPlan::*;
        // (asked, above, budget) -> plan
        let table = [
            ((false, 0, 20), Free),
            ((false, 18, 20), Free),
            // 19 + 1 fits 20, 19 + 2 would not; 20 + 1 would not either.
            ((false, 19, 20), SingleLayer),
            ((false, 20, 20), Flatten),
            ((false, 25, 20), Flatten),
            ((true, 0, 20), Flatten),
            // Budget 2: the second generation has room for one layer, the
            // third none.
            ((false, 0, 2), Free),
            ((false, 1, 2), SingleLayer),
            ((false, 2, 2), Flatten),
            // Budget 1: never two layers.
            ((false, 0, 1), SingleLayer),
            ((false, 1, 1), Flatten),
            // Budget 0: never automatic, but asked is asked.
            ((false, 0, 0), Free),
            ((false, u32::MAX, 0), Free),
            ((true, 0, 0), Flatten),
            ((false, u32::MAX, 20), Flatten),
        ];
        for ((asked, above, budget), want) in table {
            assert_eq!(plan(asked, above, budget), want, "{asked} {above} {budget}");
        }
    }

    #[test]
    fn layers_above_the_base_are_known_only_when_both_counts_are() {
        assert_eq!(layers_above_base(Some(7), Some(3)), Some(4));
        assert_eq!(layers_above_base(Some(3), Some(3)), Some(0));
        assert_eq!(layers_above_base(None, Some(3)), None);
        assert_eq!(layers_above_base(Some(7), None), None);
        assert_eq!(layers_above_base(Some(2), Some(3)), None);
        assert_eq!(layers_above_base(Some(2), Some(-1)), None);
    }

    #[test]
    fn the_lineage_base_is_the_first_image_no_snapshot_made() {
        let image = "reg/v2:1";
        let digest = Some("sha256:v2");
        let own = |i: &str, d: &str| (Some(i.to_string()), Some(d.to_string()));
        assert_eq!(lineage_base(None, image, digest), own(image, "sha256:v2"));
        assert_eq!(lineage_base(None, image, None), (Some(image.into()), None));
        // An older parent: its own base image.
        let mut parent = snapshot::Model {
            base_image: Some("reg/v1:1".into()),
            base_digest: Some("sha256:v1".into()),
            ..crate::fixtures::snapshot()
        };
        assert_eq!(
            lineage_base(Some(&parent), image, digest),
            own("reg/v1:1", "sha256:v1")
        );
        // A parent that knows its lineage passes it on.
        parent.lineage_base_image = Some("reg/base:1".into());
        parent.lineage_base_digest = Some("sha256:base".into());
        assert_eq!(
            lineage_base(Some(&parent), image, digest),
            own("reg/base:1", "sha256:base")
        );
        // Half known is not known.
        parent.lineage_base_digest = None;
        assert_eq!(
            lineage_base(Some(&parent), image, digest),
            own("reg/v1:1", "sha256:v1")
        );
    }

    #[test]
    fn the_base_layers_follow_the_flatten_the_parent_or_the_image_run() {
        // Flattened: all but the last layer.
        assert_eq!(
            lineage_base_layers(true, Some(4), Some(Some(3)), Some(6)),
            Some(3)
        );
        assert_eq!(lineage_base_layers(true, Some(1), None, None), Some(0));
        assert_eq!(lineage_base_layers(true, Some(0), None, Some(0)), None);
        assert_eq!(lineage_base_layers(true, None, None, Some(3)), None);
        // A child keeps its parent's, known or not.
        assert_eq!(
            lineage_base_layers(false, Some(6), Some(Some(3)), Some(5)),
            Some(3)
        );
        assert_eq!(
            lineage_base_layers(false, Some(6), Some(None), Some(5)),
            None
        );
        // Without a parent: the image the container ran.
        assert_eq!(lineage_base_layers(false, Some(5), None, Some(3)), Some(3));
        assert_eq!(lineage_base_layers(false, None, None, Some(3)), Some(3));
        assert_eq!(lineage_base_layers(false, Some(5), None, None), None);
        // Contradictions are unknown, not stored.
        assert_eq!(lineage_base_layers(false, Some(2), None, Some(3)), None);
        assert_eq!(
            lineage_base_layers(false, Some(2), Some(Some(3)), None),
            None
        );
    }
}
