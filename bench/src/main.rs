//! `vigil-bench`: a load tool for WHIP/WHEP servers on this machine.
//!
//! It speaks only standard WHIP/WHEP (RFC 9725) and runs its WebRTC on
//! str0m, a stack the server does not share, so any server can be measured
//! the same way. One publisher sends a looped H264 fixture padded to the
//! chosen bitrate plus Opus; N viewers play it; the server's own accounting
//! in /proc gives its CPU time and memory.
//!
//! Two threads: this one runs signalling and the procedure on a
//! current-thread runtime; the media thread ([`media`]) owns every peer and
//! socket in one poll loop. All traffic stays on loopback: sockets bind
//! 127.0.0.1, the server's other candidates are dropped, and endpoints must
//! be loopback URLs.
//!
//! Panics mean bugs; nothing a server sends can cause one.

mod cli;
mod dtls;
mod h264;
mod media;
mod metrics;
mod ogg;
mod peer;
mod proc;
mod publisher;
mod report;
mod run;
mod sent;
mod udp;
mod viewer;
mod whip;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let json = args.json.clone();
    let settings = match args.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("vigil-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let progress = |p: &report::PointResult| eprintln!("{}", report::progress_line(p));
    let report = match runtime.block_on(run::run(&settings, progress)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("vigil-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = serde_json::to_string_pretty(&report).expect("reports serialise");
    match json {
        Some(path) if path.as_os_str() == "-" => println!("{text}"),
        Some(path) => {
            print!("{}", report::tables(&report));
            if let Err(e) = std::fs::write(&path, text + "\n") {
                eprintln!("vigil-bench: writing {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        None => print!("{}", report::tables(&report)),
    }
    ExitCode::SUCCESS
}
