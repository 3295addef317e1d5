//! grantkeeper's benchmarks. Each scenario prints its figure as a ratio to a floor measured in
//! the same run on the same machine, with the absolute numbers beside it.
//!
//!     cargo run --release -p grantkeeper-bench -- sweep [--users 10000] [--latency-ms 50] [--concurrency 100]

mod sweep;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "grantkeeper benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// `sweep --job refresh` over N users with injected upstream latency, against the ideal
    /// N x latency / concurrency.
    Sweep {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().scenario {
        Scenario::Sweep {
            users,
            latency_ms,
            concurrency,
        } => sweep::run(users, latency_ms, concurrency).await,
    }
}
