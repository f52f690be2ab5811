use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: a GraphQL request allocates and frees
/// thousands of small values (rows, strings, response tree) across the
/// runtime's threads, and under load glibc's arenas spent about a fifth of
/// the API's CPU in malloc, free and consolidation (`perf` during
/// `scripts/bench-api.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    api::cli::main().await
}
