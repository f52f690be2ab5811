//! `chaos`: the chaos harness on the real stack (see `e2e_tests::chaos`).
//!
//!     chaos [--crash-points N] [--seed S] [--self-test] [--per-round N]
//!           [--desktops N] [--bound-seconds S] [--probe N] [--cancel-chance P]
//!
//! Exits 0 when no invariant broke (with `--self-test`: when the checker
//! found at least one violation on the unguarded API), 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use e2e_tests::chaos::{self, Options};

fn usage() -> ExitCode {
    eprintln!(
        "usage: chaos [--crash-points N] [--seed S] [--self-test] [--per-round N] \
         [--desktops N] [--bound-seconds S] [--probe N] [--cancel-chance P]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut seed = None;
    let mut crash_points = None;
    let mut self_test = false;
    let mut per_round = None;
    let mut desktops = None;
    let mut bound = None;
    let mut probe = None;
    let mut cancel = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next();
        match arg.as_str() {
            "--self-test" => self_test = true,
            "--seed" => seed = value().and_then(|v| v.parse::<u64>().ok()),
            "--crash-points" => crash_points = value().and_then(|v| v.parse::<usize>().ok()),
            "--per-round" => per_round = value().and_then(|v| v.parse::<usize>().ok()),
            "--desktops" => desktops = value().and_then(|v| v.parse::<usize>().ok()),
            "--bound-seconds" => bound = value().and_then(|v| v.parse::<u64>().ok()),
            "--probe" => probe = value().and_then(|v| v.parse::<usize>().ok()),
            "--cancel-chance" => cancel = value().and_then(|v| v.parse::<f64>().ok()),
            "-h" | "--help" => return usage(),
            _ => {
                eprintln!("unknown argument {arg}");
                return usage();
            }
        }
    }
    let seed = seed.unwrap_or_else(chaos::fresh_seed);
    let default_points = if self_test { 10 } else { 25 };
    let mut options = Options::new(seed, crash_points.unwrap_or(default_points));
    options.unguarded = self_test;
    if self_test {
        options.probe_snapshots = 24;
    }
    if let Some(n) = per_round {
        options.per_round = n.max(1);
    }
    if let Some(n) = desktops {
        options.desktops = n.max(1);
    }
    if let Some(s) = bound {
        options.terminal_bound = Duration::from_secs(s);
    }
    if let Some(n) = probe {
        options.probe_snapshots = n;
    }
    if let Some(p) = cancel {
        options.cancel_chance = p;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            report = chaos::run(options) => Some(report),
            _ = tokio::signal::ctrl_c() => None,
            _ = terminate.recv() => None,
        }
    });
    let report = match outcome {
        Some(Ok(report)) => report,
        Some(Err(e)) => {
            chaos::parts::kill_everything_started();
            eprintln!("chaos: the stack could not be set up: {e}");
            return ExitCode::FAILURE;
        }
        None => {
            chaos::parts::kill_everything_started();
            eprintln!("chaos: interrupted; every process it started is killed");
            return ExitCode::from(130);
        }
    };
    println!("{report}");
    if self_test {
        if report.violations.is_empty() {
            eprintln!(
                "SELF-TEST FAILED: the API ran without its transition guards and the checker \
                 reported no violation"
            );
            ExitCode::FAILURE
        } else {
            println!(
                "self-test passed: without the guards the checker reported {} violations",
                report.violations.len()
            );
            ExitCode::SUCCESS
        }
    } else if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
