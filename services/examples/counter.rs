//! The SPI tutorial's first scenario on an embedded member: four counters, two rounds of `inc(1)`.
//!
//! ```text
//! cargo run -p corecast-services --example counter
//! ```
//!
//! Prints `Round 1`, four `1`s, `Round 2`, four `2`s and `Finished`, with the tutorial's
//! `Executing 0counter.inc() on: ADDRESS` line before each result.

use corecast_engine::{BlockingMember, Config};
use corecast_services::counter::{Counter, CounterService};

fn main() -> anyhow::Result<()> {
    // The tutorial prints to stdout; so do the operations' log lines, in order with the results.
    tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();
    let member = BlockingMember::builder(Config::default())
        .service::<CounterService>()
        .start_blocking()?;
    let counters = (0..4)
        .map(|k| member.object::<Counter>(&format!("{k}counter")))
        .collect::<Result<Vec<_>, _>>()?;
    for round in 1..=2 {
        println!("Round {round}");
        for counter in &counters {
            println!("{}", member.block_on(counter.inc(1))?);
        }
    }
    println!("Finished");
    member.shutdown();
    Ok(())
}
