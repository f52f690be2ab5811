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

/// The two stacks of this file would share two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_chaos_round_keeps_every_invariant() {
    let _one = ONE_AT_A_TIME.lock().await;
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

/// The checker proves itself: the API without its transition guards
/// (`DCS_TEST_UNGUARDED_TRANSITIONS=1`) lets a result and a re-registration
/// both end one snapshot (the race probe forces that interleaving), and the
/// checker must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_what_an_unguarded_api_lets_through() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut options = Options::new(7, 4);
    options.per_round = 4;
    options.unguarded = true;
    options.probe_snapshots = 24;
    let report = chaos::run(options)
        .await
        .unwrap_or_else(|e| panic!("the chaos stack could not be set up: {e}"));
    println!("{report}");
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.invariant == "terminal status never changes"),
        "without the guards the checker must see a terminal status change; it reported {:?}",
        report.violations
    );
}
