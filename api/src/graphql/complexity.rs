//! What a list field counts in a query's complexity. Apart from the
//! schema (which is built from every resolver) so that the resolvers'
//! `complexity` attributes depend on a leaf, not on the schema that
//! depends on them.

/// What a list field counts in the query's complexity: its length times
/// what each element asks for. So lists nested in lists multiply, and
/// aliases add up, and the complexity limit refuses such a query before
/// anything runs: `ancestors { ancestors { id } }` with the default length
/// counts 100 x 100. Capped so that no sum of such numbers can overflow.
pub fn list_complexity(first: i32, child_complexity: usize) -> usize {
    let length = first.clamp(0, MAX_LIST_LENGTH) as usize;
    length
        .saturating_mul(child_complexity.max(1))
        .min(MAX_FIELD_COMPLEXITY)
}

/// A list read whole with its parent (a report's findings): its elements
/// cost no query of their own, only their bytes, so ten count as one. A
/// whole report (1,000 findings of four fields) counts 400; a page of
/// snapshots each asking for one is still refused.
pub fn held_list_complexity(first: i32, child_complexity: usize) -> usize {
    list_complexity(first, child_complexity).div_ceil(10)
}

/// A list without `first` (webhook endpoints) counts as this many
/// elements: a guess at a big workshop, so that aliasing it adds up too.
const UNPAGED_LIST_LENGTH: i32 = 50;

pub fn unpaged_list_complexity(child_complexity: usize) -> usize {
    list_complexity(UNPAGED_LIST_LENGTH, child_complexity)
}

/// No list field returns more (the lineage fields' `first` maximum).
const MAX_LIST_LENGTH: i32 = 1_000;

/// The most one field may count: far above any limit, far below overflow
/// however many fields a 1 MiB query holds.
const MAX_FIELD_COMPLEXITY: usize = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_complexity_multiplies_and_never_overflows() {
        assert_eq!(list_complexity(100, 1), 100);
        assert_eq!(list_complexity(100, 100), 10_000);
        assert_eq!(list_complexity(-5, 10), 0);
        // `first` beyond the maximum counts as the maximum.
        assert_eq!(list_complexity(i32::MAX, 1), 1_000);
        assert_eq!(list_complexity(1_000, usize::MAX), MAX_FIELD_COMPLEXITY);
        assert_eq!(held_list_complexity(1_000, 4), 400);
        assert_eq!(held_list_complexity(1, 1), 1);
        assert_eq!(held_list_complexity(-5, 10), 0);
    }
}
