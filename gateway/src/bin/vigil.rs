//! `vigil`: one binary, loopback-only by default. It runs the server, or
//! with `vigil ctl ...` administers a running one.

use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use vigil_gateway::config::{Args, Command, Config};
use vigil_gateway::links::{self, BaseOrigin};
use vigil_gateway::{Credentials, Vigil, ctl, logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::Ctl(ctl)) => ctl::run(ctl).await,
        None => serve(args).await,
    }
}

/// Runs the server until SIGTERM or SIGINT, then drains.
async fn serve(args: Args) -> std::process::ExitCode {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vigil: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    logging::init(config.log_level);
    // Registered before anything listens: from here on SIGTERM and SIGINT
    // start a drain instead of killing the process.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("vigil: cannot handle signals: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let vigil = match Vigil::start(config.clone()).await {
        Ok(vigil) => vigil,
        Err(e) => {
            eprintln!("vigil: cannot listen on {}: {e}", config.http_listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(
        media = ?vigil.sfu.media_addrs(),
        grpc = %vigil.grpc_addr,
        "vigil listening on http://{}",
        vigil.http_addr
    );
    print_start(&vigil, &config);
    let signal = signals.next().await;
    tracing::info!(
        "{signal}: closing every session (at most {:?}; a second signal exits at once)",
        config.drain
    );
    tokio::select! {
        () = vigil.shutdown() => {
            tracing::info!("shut down");
            std::process::ExitCode::SUCCESS
        }
        () = tokio::time::sleep(config.drain) => {
            tracing::warn!("still draining after {:?}: exiting", config.drain);
            std::process::ExitCode::FAILURE
        }
        signal = signals.next() => {
            tracing::warn!("{signal} again: exiting at once");
            std::process::ExitCode::from(128 + signal.number())
        }
    }
}

/// Tells the operator where everything is. The admin key itself is shown
/// only by the start that generated it: later starts say which file holds
/// it, so it does not end up in every log that keeps the output.
fn print_start(vigil: &Vigil, config: &Config) {
    let base = links::base(
        config.public_url.as_ref(),
        vigil.http_addr,
        links::machine_name().as_deref(),
    );
    let url = &base.url;
    println!("WHIP publish: {url}/whip/<room>/<stream>   (OBS: Service WHIP, Server = this URL)");
    println!("WHEP play:    {url}/whep/<room>/<stream>");
    println!(
        "gRPC control: {} (health, reflection, gRPC-web)",
        vigil.grpc_addr
    );
    let example = ctl::example(vigil.grpc_addr, config.data_dir.as_deref());
    match &vigil.credentials {
        Credentials::None => {
            println!("Web console:  {url}/console/");
            eprintln!();
            eprintln!("WARNING: --insecure-no-auth: anyone who can reach these ports can publish,");
            eprintln!("WARNING: play and administer; rooms are created on first use.");
            eprintln!();
        }
        Credentials::AdminKey {
            key,
            generated: true,
            stored_in,
        } => {
            // The key rides in the fragment, which the browser never sends.
            println!("Web console:  {url}/console/#key={key}");
            let (where_, bearer) = match stored_in {
                Some(path) => (
                    format!(
                        "stored in {} (shown this once; later starts print only where it is)",
                        path.display()
                    ),
                    format!("$(cat {})", shell_word(&path.display().to_string())),
                ),
                None => ("valid until this process exits".to_owned(), key.clone()),
            };
            println!("Admin key generated, {where_}:");
            println!("  {key}");
            println!("  e.g. {example}");
            println!(
                "  or   grpcurl -plaintext -H \"authorization: Bearer {bearer}\" {} list",
                vigil.grpc_addr
            );
        }
        Credentials::AdminKey {
            generated: false,
            stored_in: Some(path),
            ..
        } => {
            let path = path.display().to_string();
            println!("Web console:  {url}/console/   (sign in with the admin key in {path})");
            println!("Admin key:    in {path} (not printed; `vigil ctl` reads it there)");
            println!("  e.g. {example}");
            println!(
                "  or   grpcurl -plaintext -H \"authorization: Bearer $(cat {})\" {} list",
                shell_word(&path),
                vigil.grpc_addr
            );
        }
        Credentials::AdminKey {
            generated: false,
            stored_in: None,
            ..
        } => {
            println!("Web console:  {url}/console/   (sign in with the configured admin key)");
        }
    }
    if base.origin == BaseOrigin::Guessed {
        println!(
            "Note: HTTP listens on every address ({}), so these links use {url}, a guess \
             other devices may not reach: set --public-url to the URL they reach Vigil at.",
            vigil.http_addr
        );
    }
}

/// `text` as one shell word, for commands the operator copies.
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./-:".contains(&b))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The signals that stop Vigil: SIGTERM (systemd, Docker, Kubernetes) and
/// SIGINT (Ctrl-C).
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

/// Which of [`Signals`] arrived.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Terminate,
    Interrupt,
}

impl Stop {
    fn number(self) -> u8 {
        match self {
            Stop::Terminate => 15,
            Stop::Interrupt => 2,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Terminate => "SIGTERM",
            Stop::Interrupt => "SIGINT",
        })
    }
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.terminate.recv() => Stop::Terminate,
            _ = self.interrupt.recv() => Stop::Interrupt,
        }
    }
}
