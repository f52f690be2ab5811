//! The CI round of the chaos harness (`e2e_tests::chaos`): a short seeded
//! run on the real stack (a private Postgres, two `dcs-api` replicas, the
//! real `dcs-agent`, containerd desktops, the registry, a webhook
//! receiver) with the replicas, the agent and Postgres killed at random
//! moments of in-flight snapshot flows; every invariant must hold.
//!
//! `DCS_CHAOS_SEED` and `DCS_CHAOS_CRASH_POINTS` change the seed (default
//! fixed, so CI runs the same schedule) and the number of kills (default
//! 24). `scripts/chaos.sh` runs the same code with any number of crash
//! points.

use e2e_tests::chaos::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_chaos_round_keeps_every_invariant() {
    let seed = std::env::var("DCS_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_202);
    let crash_points = std::env::var("DCS_CHAOS_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut options = Options::new(seed, crash_points);
    options.per_round = 12;
    let report = chaos::run(options)
        .await
        .unwrap_or_else(|e| panic!("the chaos stack could not be set up: {e}"));
    println!("{report}");
    assert_eq!(
        report.crash_points.len(),
        crash_points,
        "every planned kill happened"
    );
    assert!(
        report.hits() * 2 >= crash_points,
        "most kills should hit a snapshot in flight: {} of {crash_points}",
        report.hits()
    );
    assert!(
        report.statuses.get("PUSHED").copied().unwrap_or(0) > 0,
        "some snapshots were pushed despite the kills"
    );
    assert!(
        report.violations.is_empty(),
        "{} invariant violations (seed {seed}):\n{}",
        report.violations.len(),
        report
            .violations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
