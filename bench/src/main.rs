//! `quantaid-bench [--duration-secs N] [--concurrency C] ...`: parses flags and calls the library.

use quantaid_bench::options::{Options, USAGE};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(options) = Options::parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    quantaid_bench::run(options).await
}
