//! A stand-in OTLP collector for the benchmark: serves the OTLP/gRPC trace
//! and metrics services on 127.0.0.1:4317 (or the address given) and prints
//! what it has received every 5 s.
//!
//!     cargo run --release -p vigil-tests --example otlp_sink [ADDR]

use std::time::Duration;

use vigil_tests::otlp::Collector;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned());
    let collector = Collector::default();
    let bound = collector.start_on(&addr).await;
    println!("OTLP sink on {bound}");
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut names = std::collections::BTreeMap::<String, usize>::new();
        for span in collector.spans() {
            *names.entry(span.name).or_default() += 1;
        }
        let metrics = collector.metrics.lock().map(|m| m.len()).unwrap_or(0);
        println!("spans by name {names:?}; {metrics} metrics received so far");
    }
}
