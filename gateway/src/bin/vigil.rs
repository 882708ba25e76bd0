//! `vigil`: one binary, loopback-only by default. It runs the server, or
//! with `vigil ctl ...` administers a running one.

use clap::Parser;
use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal};
use vigil_gateway::config::{Args, Command, Config, LogFormat};
use vigil_gateway::links::{self, BaseOrigin};
use vigil_gateway::{Credentials, Vigil, ctl, logging, telemetry};

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
    let tracer = match config.otlp_endpoint.as_deref().map(telemetry::otlp_tracer) {
        None => None,
        Some(Ok(tracer)) => Some(tracer),
        Some(Err(e)) => {
            eprintln!("vigil: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    logging::init(config.log_level, config.log_format, tracer.as_ref());
    let code = run(config).await;
    if let Some(tracer) = tracer {
        // Sends the spans still batched (blocking, bounded by the
        // exporter's timeout).
        let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
    }
    code
}

/// Serves until SIGTERM or SIGINT, then drains.
async fn run(config: Config) -> std::process::ExitCode {
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
        ice_tcp = config.ice_tcp,
        grpc = %vigil.grpc_addr,
        "vigil listening on {}://{}",
        scheme(&vigil),
        vigil.http_addr
    );
    print_start(&vigil, &config);
    let signal = loop {
        match signals.next().await {
            Signal::Stop(stop) => break stop,
            Signal::Reload => reload_tls(&vigil),
        }
    };
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
        signal = signals.next_stop() => {
            tracing::warn!("{signal} again: exiting at once");
            std::process::ExitCode::from(128 + signal.number())
        }
    }
}

/// SIGHUP: read the TLS certificate and key again.
fn reload_tls(vigil: &Vigil) {
    match vigil.reload_tls() {
        None => tracing::info!("SIGHUP: no TLS configured, nothing to reload"),
        Some(Ok(())) => {
            if let Some(tls) = &vigil.tls {
                tracing::info!(
                    fingerprint = %tls.certificates.fingerprint(),
                    "SIGHUP: TLS certificate reloaded"
                );
            }
        }
        Some(Err(e)) => {
            tracing::error!("SIGHUP: cannot reload the TLS certificate, keeping the old one: {e}")
        }
    }
}

fn scheme(vigil: &Vigil) -> &'static str {
    if vigil.tls.is_some() { "https" } else { "http" }
}

/// Tells the operator where everything is. The admin key itself is shown
/// only by the start that generated it: later starts say which file holds
/// it, so it does not end up in every log that keeps the output.
fn print_start(vigil: &Vigil, config: &Config) {
    let base = links::base_with(
        scheme(vigil),
        config.public_url.as_ref(),
        vigil.http_addr,
        links::machine_name().as_deref(),
    );
    let url = &base.url;
    println!("WHIP publish: {url}/whip/<room>/<stream>   (OBS: Service WHIP, Server = this URL)");
    println!("WHEP play:    {url}/whep/<room>/<stream>");
    let tls = vigil.tls.is_some();
    println!(
        "gRPC control: {}{} (health, reflection, gRPC-web)",
        if tls { "https://" } else { "" },
        vigil.grpc_addr
    );
    if let Some(redirect) = vigil.redirect_addr {
        println!("HTTP:         {redirect} redirects to HTTPS");
    }
    match vigil.metrics_addr {
        Some(metrics) => println!("Metrics:      http://{metrics}/metrics (Prometheus)"),
        None => println!("Metrics:      {url}/metrics (Prometheus)"),
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        println!("OTLP export:  {endpoint} (traces and metrics)");
    }
    print_tls(vigil, url);
    let example = ctl::example(vigil.grpc_addr, config.data_dir.as_deref(), tls);
    // grpcurl's flag for how to trust the server.
    let grpcurl_trust = match &vigil.tls {
        None => "-plaintext".to_owned(),
        Some(tls) => match &tls.self_signed {
            Some(made) => format!("-cacert {}", shell_word(&made.ca.display().to_string())),
            None => String::new(),
        },
    };
    match &vigil.credentials {
        Credentials::None => {
            println!("Web console:  {url}/console/");
            if config.log_format == LogFormat::Json {
                // stderr is the JSON log: a log line, not a banner.
                tracing::warn!(
                    "--insecure-no-auth: anyone who can reach these ports can publish, play and administer; rooms are created on first use"
                );
            } else {
                eprintln!();
                eprintln!(
                    "WARNING: --insecure-no-auth: anyone who can reach these ports can publish,"
                );
                eprintln!("WARNING: play and administer; rooms are created on first use.");
                eprintln!();
            }
        }
        Credentials::AdminKey {
            key,
            generated: true,
            stored_in,
            shared,
        } => {
            // The key rides in the fragment, which the browser never sends.
            println!("Web console:  {url}/console/#key={key}");
            let (where_, bearer) = match stored_in {
                None if *shared => (
                    "stored in Redis for every node (shown this once; `redis-cli HGET vigil:secrets admin_key`)"
                        .to_owned(),
                    key.clone(),
                ),
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
                "  or   grpcurl {grpcurl_trust} -H \"authorization: Bearer {bearer}\" {} list",
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
                "  or   grpcurl {grpcurl_trust} -H \"authorization: Bearer $(cat {})\" {} list",
                shell_word(&path),
                vigil.grpc_addr
            );
        }
        Credentials::AdminKey {
            generated: false,
            stored_in: None,
            shared: true,
            ..
        } => {
            println!(
                "Web console:  {url}/console/   (sign in with the deployment's admin key: \
                 `redis-cli HGET vigil:secrets admin_key`)"
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

/// What the operator needs to know about TLS: which certificate, and with
/// `--tls-self-signed`, how devices come to trust it.
fn print_tls(vigil: &Vigil, url: &str) {
    let Some(tls) = &vigil.tls else { return };
    let fingerprint = tls.certificates.fingerprint();
    match &tls.self_signed {
        None => println!(
            "TLS:          {} (SHA-256 {fingerprint}); reloaded on SIGHUP or when the file changes",
            tls.certificates.cert_path().display()
        ),
        Some(made) => {
            let new = match made.made {
                vigil_gateway::tls::self_signed::Made::CaAndCertificate => "a new ",
                _ => "",
            };
            println!(
                "TLS:          self-signed by {new}local CA, for {}",
                made.names.join(", ")
            );
            println!(
                "  Devices trust it once: open {url}/ca.crt and install it as a CA certificate"
            );
            println!("  (Android: Settings > Security > Install a certificate > CA certificate;");
            println!(
                "  iOS: install the profile, then enable it in About > Certificate Trust Settings),"
            );
            println!("  or accept the browser's warning on each device.");
            println!(
                "  CA: {} (SHA-256 {})",
                made.ca.display(),
                made.ca_fingerprint
            );
        }
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

/// The signals Vigil acts on: SIGTERM (systemd, Docker, Kubernetes) and
/// SIGINT (Ctrl-C) stop it, SIGHUP reloads the TLS certificate.
struct Signals {
    terminate: UnixSignal,
    interrupt: UnixSignal,
    hangup: UnixSignal,
}

/// What a signal asks for.
enum Signal {
    Stop(Stop),
    Reload,
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
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop(Stop::Terminate),
            _ = self.interrupt.recv() => Signal::Stop(Stop::Interrupt),
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    /// The next stopping signal (a SIGHUP while draining is ignored).
    async fn next_stop(&mut self) -> Stop {
        loop {
            if let Signal::Stop(stop) = self.next().await {
                return stop;
            }
        }
    }
}
