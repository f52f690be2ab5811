use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    node_agent::cli::main().await
}
