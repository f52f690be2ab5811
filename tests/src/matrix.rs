//! Table tests that run every case and report every failure at the end, so
//! that one failing case does not hide the others.

use std::fmt::Debug;

/// The failures of a table of cases, reported together by [`Self::assert_none`].
#[derive(Debug)]
pub struct Failures {
    table: String,
    failures: Vec<String>,
}

impl Failures {
    /// No failures yet, of the table described by `table`.
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_string(),
            failures: Vec::new(),
        }
    }

    /// Records `message()` unless `holds`; returns `holds`.
    pub fn check(&mut self, holds: bool, message: impl FnOnce() -> String) -> bool {
        if !holds {
            self.failures.push(message());
        }
        holds
    }

    /// Records a failure unless `left == right`, as `assert_eq!` would
    /// report it; returns whether they are equal.
    pub fn check_eq<T: PartialEq + Debug>(
        &mut self,
        left: T,
        right: T,
        message: impl FnOnce() -> String,
    ) -> bool {
        let equal = left == right;
        self.check(equal, || {
            format!("{}\n      left: {left:?}\n     right: {right:?}", message())
        })
    }

    /// Fails the test with every recorded failure, if there is any.
    pub fn assert_none(self) {
        assert!(
            self.failures.is_empty(),
            "{}: {} case(s) failed:\n  - {}",
            self.table,
            self.failures.len(),
            self.failures.join("\n  - ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_without_failures() {
        let mut failures = Failures::new("a table");
        assert!(failures.check(true, || unreachable!()));
        assert!(failures.check_eq(1, 1, || unreachable!()));
        failures.assert_none();
    }

    #[test]
    fn reports_every_failure_not_only_the_first() {
        let mut failures = Failures::new("a table");
        assert!(!failures.check(false, || "case one".into()));
        failures.check(true, || "case two".into());
        assert!(!failures.check_eq("a", "b", || "case three".into()));
        let report = std::panic::catch_unwind(move || failures.assert_none())
            .expect_err("failures fail the test");
        let report = report.downcast_ref::<String>().expect("a message");
        assert!(report.contains("a table: 2 case(s) failed"), "{report}");
        assert!(report.contains("case one"), "{report}");
        assert!(
            report.contains("case three\n      left: \"a\"\n     right: \"b\""),
            "{report}"
        );
        assert!(!report.contains("case two"), "{report}");
    }
}
