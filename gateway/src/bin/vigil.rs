//! `vigil`: one binary, one command, loopback-only by default.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vigil_gateway::config::Args;
use vigil_gateway::{Credentials, Vigil};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,rtc=warn")),
        )
        .init();
    let config = match Args::parse().into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vigil: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let vigil = match Vigil::start(config.clone()).await {
        Ok(vigil) => vigil,
        Err(e) => {
            eprintln!("vigil: cannot listen on {}: {e}", config.http_listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let base = format!("http://{}", vigil.http_addr);
    tracing::info!(media = ?vigil.sfu.media_addrs(), grpc = %vigil.grpc_addr, "vigil listening on {base}");
    println!("WHIP publish: {base}/whip/<room>/<stream>   (OBS: Service WHIP, Server = this URL)");
    println!("WHEP play:    {base}/whep/<room>/<stream>");
    println!(
        "gRPC control: {} (health, reflection, gRPC-web)",
        vigil.grpc_addr
    );
    // The key rides in the fragment, which the browser never sends.
    let console = match &vigil.credentials {
        Credentials::None => format!("{base}/console/"),
        Credentials::AdminKey { key, .. } => format!("{base}/console/#key={key}"),
    };
    println!("Web console:  {console}");
    match &vigil.credentials {
        Credentials::None => {
            eprintln!();
            eprintln!("WARNING: --insecure-no-auth: anyone who can reach these ports can publish,");
            eprintln!("WARNING: play and administer; rooms are created on first use.");
            eprintln!();
        }
        Credentials::AdminKey { key, generated } => {
            let where_ = match &config.data_dir {
                Some(dir) => format!("stored in {}/admin.key", dir.display()),
                None => "valid until this process exits".to_owned(),
            };
            let how = if *generated { "generated" } else { "loaded" };
            println!("Admin key {how}, {where_}:");
            println!("  {key}");
            println!(
                "  e.g. grpcurl -plaintext -H 'authorization: Bearer {key}' {} list",
                vigil.grpc_addr
            );
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!("cannot wait for Ctrl-C: {e}");
    }
    tracing::info!("shutting down");
    vigil.shutdown().await;
    std::process::ExitCode::SUCCESS
}
