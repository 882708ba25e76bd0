//! `vigil ctl`: the admin command line, a client of the same gRPC API that
//! grpcurl and the web console use (what LiveKit's `lk` is to LiveKit).
//!
//! Each command makes one RPC and prints its result: human-readable
//! `key=value` lines by default, JSON with `--json` (one document, or one
//! per line for `watch`). The credential is `--admin-key`, else
//! `VIGIL_ADMIN_KEY`, else the key the server keeps in its data directory;
//! with none of them the request goes without one, which an
//! `--insecure-no-auth` server accepts.
//!
//! Exit status: 0 done, 1 the server refused (a gRPC error), 2 a usage
//! error (clap's), 3 the server could not be reached.
//!
//! - [`client`]: the connection, the credential, one method per RPC.
//! - [`output`]: the text and JSON forms of every response and event.

mod client;
mod output;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde_json::Value;
use vigil_proto::v1 as pb;

use crate::config::{DEFAULT_DATA_DIR, DEFAULT_GRPC_LISTEN};
use client::{Client, Credential};

/// The help section of the options every command takes.
const GLOBAL: &str = "Options of every command";

/// `vigil ctl`: what to connect to, with which credential, and what to do.
#[derive(Debug, Args)]
#[command(
    about = "Administer a running Vigil over its gRPC API",
    after_help = "Exit status: 0 done, 1 the server refused, 2 usage error, 3 server unreachable."
)]
pub struct CtlArgs {
    /// The server's gRPC address: `http://HOST:PORT` or `HOST:PORT`, or
    /// `https://HOST:PORT` for a server with TLS on.
    #[arg(long, env = "VIGIL_SERVER", global = true, default_value_t = ServerUrl::default(), help_heading = GLOBAL)]
    pub server: ServerUrl,
    /// The admin key (or a room token with the admin grant, for that
    /// room's RPCs) [default: the one in the data directory].
    #[arg(long, env = "VIGIL_ADMIN_KEY", global = true, hide_env_values = true, help_heading = GLOBAL)]
    pub admin_key: Option<String>,
    /// The server's data directory, where it keeps its admin key (and,
    /// with `--tls-self-signed`, the CA `https://` trusts).
    #[arg(long, env = "VIGIL_DATA_DIR", global = true, default_value = DEFAULT_DATA_DIR, help_heading = GLOBAL)]
    pub data_dir: PathBuf,
    /// For `https://`: a CA certificate (PEM) to trust besides the
    /// system's [default: the data directory's tls/ca.pem, if there is one].
    #[arg(long, env = "VIGIL_TLS_CA", global = true, help_heading = GLOBAL)]
    pub tls_ca: Option<PathBuf>,
    /// Print JSON (`.proto` field names) instead of text; `watch` prints
    /// one object per line.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands of `vigil ctl`.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Create, list, show, change and delete rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Make and revoke participant tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Pull RTSP IP cameras into a room: each publishes the stream named
    /// after it, played like any other.
    #[command(subcommand)]
    Camera(CameraCommand),
    /// Who is in a room: publishers with their tracks, and viewers.
    Participants {
        /// The room.
        room: String,
    },
    /// One stream's live statistics: per track what the publisher sends
    /// (bitrate, frame rate, picture size, loss, jitter), per viewer what
    /// it reports (loss, jitter, round trip), over the last 2 s.
    Stats {
        /// The room.
        room: String,
        /// The stream (its publisher's identity).
        stream: String,
    },
    /// A room's alarms: the active ones and those cleared recently, newest
    /// first.
    Alarms {
        /// The room.
        room: String,
        /// Also list alarms cleared within this many seconds [default: 3600].
        #[arg(long)]
        recent_secs: Option<u32>,
    },
    /// Acknowledge an alarm (its id is in `alarms` and in `watch`'s
    /// alarm_raised lines): every wall sees who saw it.
    Ack {
        /// The room.
        room: String,
        /// The alarm's id.
        alarm_id: u64,
    },
    /// Close every WHIP/WHEP session of one participant (and, with
    /// --ban-secs, keep it out of the room for that long).
    HangUp {
        /// The room.
        room: String,
        /// The participant.
        identity: String,
        /// Refuse its new sessions in the room for this many seconds.
        #[arg(long, default_value_t = 0)]
        ban_secs: u32,
    },
    /// Let a participant banned by `hang-up --ban-secs` back in at once.
    Unban {
        /// The room.
        room: String,
        /// The participant.
        identity: String,
    },
    /// Stop forwarding one track of a publisher (`--unmute` resumes it).
    Mute {
        /// The room.
        room: String,
        /// The publisher.
        identity: String,
        /// Which of its tracks.
        kind: MediaKind,
        /// Resume forwarding instead (at the next keyframe).
        #[arg(long)]
        unmute: bool,
    },
    /// Ask a participant to play another's stream (a dispatcher calling
    /// back: the caller must be publishing, the callee in the room).
    Call {
        /// The room.
        room: String,
        /// Whose stream the callee plays.
        caller: String,
        /// Who is asked to play it.
        callee: String,
    },
    /// End a participant's call: its playback of the caller stops, and the
    /// caller's stream too unless it is in another call.
    EndCall {
        /// The room.
        room: String,
        /// Who was called.
        callee: String,
    },
    /// Print events and alarms as they happen, until interrupted.
    Watch {
        /// Only this room's events [default: every room].
        room: Option<String>,
        /// Only events about this participant.
        #[arg(long)]
        identity: Option<String>,
        /// First replay the retained events after this id (the last one
        /// seen), so a restarted watch misses nothing.
        #[arg(long)]
        after_id: Option<u64>,
    },
}

/// `vigil ctl room ...`
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room.
    Create(CreateRoom),
    /// Every room, with its live counts.
    List,
    /// One room.
    Get {
        /// The room.
        name: String,
    },
    /// Change a live room's limits and alarm thresholds (those not given
    /// are kept); they apply at once.
    Update(UpdateRoom),
    /// Delete a room, hanging up everyone in it.
    Delete {
        /// The room.
        name: String,
    },
}

/// `vigil ctl room update`: the settings to change, at least one.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["max_publishers", "max_viewers", "stall_after_ms", "min_bitrate_bps", "max_keyframe_interval_ms"])
))]
pub struct UpdateRoom {
    /// The room.
    pub name: String,
    /// Most publishers at once, or `none` for unlimited.
    #[arg(long, value_name = "N|none")]
    pub max_publishers: Option<Limit>,
    /// Most viewers at once, or `none` for unlimited.
    #[arg(long, value_name = "N|none")]
    pub max_viewers: Option<Limit>,
    /// A stream without media for this long raises STALLED.
    #[arg(long, visible_alias = "stall-ms", value_name = "MS")]
    pub stall_after_ms: Option<u32>,
    /// A publisher under this bitrate raises LOW_BITRATE; 0 disables.
    #[arg(long, value_name = "BPS")]
    pub min_bitrate_bps: Option<u64>,
    /// The keyframe wait: a keyframe asked for a viewer that has not come
    /// after this long raises KEYFRAME_INTERVAL; 0 disables.
    #[arg(long, visible_alias = "keyframe-wait-ms", value_name = "MS")]
    pub max_keyframe_interval_ms: Option<u32>,
}

/// A room limit on the command line: a number, or `none` (unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// At most this many.
    Max(u32),
    /// No limit.
    Unlimited,
}

impl FromStr for Limit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "unlimited" => Ok(Limit::Unlimited),
            _ => s
                .parse()
                .map(Limit::Max)
                .map_err(|_| format!("{s}: a number, or none for unlimited")),
        }
    }
}

/// `vigil ctl room create`: a name, limits and alarm thresholds.
#[derive(Debug, Args)]
pub struct CreateRoom {
    /// 1-64 of A-Z a-z 0-9 _ . -
    pub name: String,
    /// Most publishers at once [default: unlimited].
    #[arg(long)]
    pub max_publishers: Option<u32>,
    /// Most viewers at once [default: unlimited].
    #[arg(long)]
    pub max_viewers: Option<u32>,
    /// A stream without media for this long raises STALLED [default: 3000].
    #[arg(long)]
    pub stall_after_ms: Option<u32>,
    /// A publisher under this bitrate raises LOW_BITRATE; 0 disables [default: 50000].
    #[arg(long)]
    pub min_bitrate_bps: Option<u64>,
    /// A keyframe asked for a viewer that has not come after this long
    /// raises KEYFRAME_INTERVAL; 0 disables [default: 5000].
    #[arg(long)]
    pub max_keyframe_interval_ms: Option<u32>,
}

/// `vigil ctl camera ...`
#[derive(Debug, Subcommand)]
pub enum CameraCommand {
    /// Add a camera to a room; the server pulls it (again after a
    /// restart) and publishes it as the stream IDENTITY.
    Add(AddCamera),
    /// Change a camera's settings (those not given are kept); a new URL,
    /// credential, transport or on-demand setting makes the server pull it
    /// again.
    Update(UpdateCamera),
    /// Stop pulling a camera and forget it; its viewers are closed.
    Remove {
        /// The room.
        room: String,
        /// The camera.
        identity: String,
    },
    /// A room's cameras with their state (never their passwords).
    List {
        /// The room.
        room: String,
    },
}

/// `vigil ctl camera add`.
#[derive(Debug, Args)]
pub struct AddCamera {
    /// The room.
    pub room: String,
    /// The camera's name, which is also its stream's (1-64 of A-Z a-z
    /// 0-9 _ . -).
    pub identity: String,
    /// `rtsp://host[:port]/path`; credentials in it
    /// (`rtsp://user:pass@host/`) are taken out and stored apart.
    pub url: String,
    /// The user name to log in with.
    #[arg(long)]
    pub username: Option<String>,
    /// The environment variable holding the password (a password on the
    /// command line would stay in the shell's history).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// RTP over UDP instead of interleaved on the RTSP connection (TCP).
    #[arg(long)]
    pub udp: bool,
    /// Pull it only while someone watches.
    #[arg(long)]
    pub on_demand: bool,
}

/// `vigil ctl camera update`: the settings to change, at least one.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["url", "username", "password_env", "tcp", "udp", "on_demand"])
))]
pub struct UpdateCamera {
    /// The room.
    pub room: String,
    /// The camera.
    pub identity: String,
    /// A new `rtsp://` URL (credentials in it are taken out).
    #[arg(long)]
    pub url: Option<String>,
    /// A new user name (empty for none).
    #[arg(long)]
    pub username: Option<String>,
    /// The environment variable holding the new password (empty for none).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Interleave RTP on the RTSP connection.
    #[arg(long, conflicts_with = "udp")]
    pub tcp: bool,
    /// RTP over UDP.
    #[arg(long)]
    pub udp: bool,
    /// Pull it only while someone watches (`true`) or all the time.
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub on_demand: Option<bool>,
}

/// The password in environment variable `var`.
fn password_from_env(var: &str) -> Result<String, CtlError> {
    std::env::var(var).map_err(|_| CtlError::PasswordEnv {
        var: var.to_owned(),
    })
}

impl AddCamera {
    fn into_request(self) -> Result<pb::AddCameraRequest, CtlError> {
        let transport = match self.udp {
            true => pb::CameraTransport::Udp,
            false => pb::CameraTransport::Tcp,
        };
        Ok(pb::AddCameraRequest {
            password: self
                .password_env
                .as_deref()
                .map(password_from_env)
                .transpose()?
                .unwrap_or_default(),
            room: self.room,
            identity: self.identity,
            url: self.url,
            username: self.username.unwrap_or_default(),
            transport: transport.into(),
            on_demand: self.on_demand,
        })
    }
}

impl UpdateCamera {
    fn into_request(self) -> Result<pb::UpdateCameraRequest, CtlError> {
        let transport = match (self.tcp, self.udp) {
            (true, _) => Some(pb::CameraTransport::Tcp),
            (_, true) => Some(pb::CameraTransport::Udp),
            _ => None,
        };
        Ok(pb::UpdateCameraRequest {
            password: self
                .password_env
                .as_deref()
                .map(password_from_env)
                .transpose()?,
            room: self.room,
            identity: self.identity,
            url: self.url,
            username: self.username,
            transport: transport.map(Into::into),
            on_demand: self.on_demand,
        })
    }
}

/// `vigil ctl token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a token for one participant of one room; prints the token
    /// (its id, expiry and WHIP path on stderr).
    Create(CreateToken),
    /// Revoke a token by its id (hanging up its identity's sessions in the
    /// room), or with --all every token issued for the room so far
    /// (hanging up everyone in it).
    Revoke(RevokeToken),
}

/// `vigil ctl token revoke`: one token, or all of a room's.
#[derive(Debug, Args)]
pub struct RevokeToken {
    /// The room the token opens.
    pub room: String,
    /// The token's id, as `token create` printed it.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub token_id: Option<String>,
    /// Every token issued for the room so far.
    #[arg(long)]
    pub all: bool,
}

/// `vigil ctl token create`: who, where, what it may do, for how long.
#[derive(Debug, Args)]
pub struct CreateToken {
    /// The one room the token opens (it must exist).
    pub room: String,
    /// The participant; a publisher publishes the stream of this name.
    pub identity: String,
    /// May publish its own stream (WHIP).
    #[arg(long)]
    pub publish: bool,
    /// May play the room's streams (WHEP).
    #[arg(long)]
    pub subscribe: bool,
    /// May do everything in the room (a dispatcher).
    #[arg(long)]
    pub admin: bool,
    /// Lifetime in seconds [default: 86400].
    #[arg(long)]
    pub ttl_secs: Option<u32>,
}

/// A track kind on the command line (`audio`, `video`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MediaKind {
    Audio,
    Video,
}

/// The server's gRPC endpoint: an `http://` URL, or `https://` for a
/// server with TLS on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(String);

impl Default for ServerUrl {
    fn default() -> Self {
        ServerUrl(format!("http://{DEFAULT_GRPC_LISTEN}"))
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ServerUrl {
    type Err = String;

    /// `http://HOST:PORT`, `https://HOST:PORT`, or `HOST:PORT` (as
    /// `--grpc-listen` is written).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = if s.contains("://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{s}: only http:// or https://"));
        }
        match url.parse::<tonic::transport::Uri>() {
            Ok(uri) if uri.host().is_some() => Ok(ServerUrl(url)),
            _ => Err(format!("{s}: not a server address (http://HOST:PORT)")),
        }
    }
}

impl ServerUrl {
    /// Over TLS.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

/// Why a `vigil ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No connection to the server could be made.
    #[error("cannot reach the Vigil server at {server}: {cause}")]
    Unreachable {
        /// The address tried.
        server: ServerUrl,
        /// The transport's error chain.
        cause: String,
    },
    /// The server answered the RPC with an error.
    #[error("{}", client::describe(.status, .hint.as_deref()))]
    Refused {
        /// What the server said.
        status: tonic::Status,
        /// What to do about it, when the credential is the likely cause.
        hint: Option<String>,
    },
    /// The credential given cannot be sent as a header.
    #[error("the admin key must be printable ASCII without spaces")]
    BadKey,
    /// `--password-env` names a variable that is not set.
    #[error("--password-env {var}: no such environment variable (or it is not UTF-8)")]
    PasswordEnv {
        /// The variable.
        var: String,
    },
    /// Standard output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl CtlError {
    /// The process exit status for this error (the crate docs list them).
    fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } | CtlError::Output(_) => 1,
            CtlError::BadKey | CtlError::PasswordEnv { .. } => 2,
            CtlError::Unreachable { .. } => 3,
        }
    }
}

/// A `vigil ctl` command line that works against a server serving gRPC on
/// `grpc` with data directory `data_dir` (the server prints it at start):
/// flags only where the server's differ from ctl's defaults.
/// With `tls`, the server is named `https://`.
pub fn example(grpc: SocketAddr, data_dir: Option<&Path>, tls: bool) -> String {
    let mut line = String::from("vigil ctl");
    if tls {
        line.push_str(&format!(" --server https://{grpc}"));
    } else if grpc != DEFAULT_GRPC_LISTEN {
        line.push_str(&format!(" --server {grpc}"));
    }
    match data_dir {
        Some(dir) if dir == Path::new(DEFAULT_DATA_DIR) => {}
        Some(dir) => line.push_str(&format!(" --data-dir {}", dir.display())),
        None => line.push_str(" --admin-key <key>"),
    }
    line.push_str(" room list");
    line
}

/// Runs one `vigil ctl` command; errors become one line on stderr and the
/// exit status.
pub async fn run(args: CtlArgs) -> ExitCode {
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        // `vigil ctl watch | head`: the reader has all it wanted.
        Err(CtlError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil ctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn execute(args: CtlArgs) -> Result<(), CtlError> {
    let credential = Credential::resolve(args.admin_key, &args.data_dir)?;
    let tls_ca = args.tls_ca.clone().or_else(|| {
        let kept = args.data_dir.join("tls").join("ca.pem");
        kept.exists().then_some(kept)
    });
    let client = Client::connect(&args.server, tls_ca.as_deref(), credential).await?;
    let out = Printer { json: args.json };
    match args.command {
        CtlCommand::Room(command) => room(&client, &out, command).await,
        CtlCommand::Token(TokenCommand::Create(create)) => token(&client, &out, create).await,
        CtlCommand::Camera(command) => camera(&client, &out, command).await,
        CtlCommand::Token(TokenCommand::Revoke(revoke)) => {
            let closed = match &revoke.token_id {
                Some(id) => client.revoke_token(&revoke.room, id).await?.sessions_closed,
                None => {
                    client
                        .revoke_room_tokens(&revoke.room)
                        .await?
                        .sessions_closed
                }
            };
            out.print(
                || output::revoked_text(&revoke.room, revoke.token_id.as_deref(), closed),
                || output::revoked_json(closed),
            )
        }
        CtlCommand::Participants { room } => {
            let response = client.list_participants(&room).await?;
            if response.participants.is_empty() && !out.json {
                eprintln!("no participants in {room}");
            }
            out.print(
                || output::participants_text(&response),
                || output::participants_json(&response),
            )
        }
        CtlCommand::Stats { room, stream } => {
            let stats = client.stream_stats(&room, &stream).await?;
            out.print(
                || output::stream_stats_text(&stats),
                || output::stream_stats_json(&stats),
            )
        }
        CtlCommand::Alarms { room, recent_secs } => {
            let response = client.list_alarms(&room, recent_secs).await?;
            if response.alarms.is_empty() && !out.json {
                eprintln!("no alarms in {room}");
            }
            out.print(
                || output::alarms_text(&response.alarms),
                || output::alarms_json(&response.alarms),
            )
        }
        CtlCommand::Ack { room, alarm_id } => {
            let response = client.acknowledge_alarm(&room, alarm_id).await?;
            let alarms: Vec<pb::Alarm> = response.alarm.into_iter().collect();
            out.print(
                || output::alarms_text(&alarms),
                || output::alarms_json(&alarms),
            )
        }
        CtlCommand::HangUp {
            room,
            identity,
            ban_secs,
        } => {
            let response = client.hang_up(&room, &identity, ban_secs).await?;
            out.print(
                || output::hung_up_text(&room, &identity, &response),
                || output::hung_up_json(&response),
            )
        }
        CtlCommand::Unban { room, identity } => {
            let response = client.lift_ban(&room, &identity).await?;
            out.print(
                || output::unbanned_text(&room, &identity, &response),
                || output::unbanned_json(&response),
            )
        }
        CtlCommand::Mute {
            room,
            identity,
            kind,
            unmute,
        } => {
            let kind = match kind {
                MediaKind::Audio => pb::TrackKind::Audio,
                MediaKind::Video => pb::TrackKind::Video,
            };
            client.mute_track(&room, &identity, kind, !unmute).await?;
            out.print(
                || output::muted_text(&room, &identity, kind, !unmute),
                || Value::Object(Default::default()),
            )
        }
        CtlCommand::Call {
            room,
            caller,
            callee,
        } => {
            let response = client.call(&room, &caller, &callee).await?;
            out.print(
                || output::called_text(&callee, &response),
                || output::called_json(&response),
            )
        }
        CtlCommand::EndCall { room, callee } => {
            let response = client.end_call(&room, &callee).await?;
            out.print(
                || output::call_ended_text(&room, &callee, &response),
                || output::call_ended_json(&response),
            )
        }
        CtlCommand::Watch {
            room,
            identity,
            after_id,
        } => {
            let request = pb::WatchRequest {
                room: room.unwrap_or_default(),
                identity: identity.unwrap_or_default(),
                after_id,
            };
            watch(&client, &out, request).await
        }
    }
}

async fn room(client: &Client, out: &Printer, command: RoomCommand) -> Result<(), CtlError> {
    match command {
        RoomCommand::Create(create) => {
            let room = client.create_room(create.into_request()).await?;
            out.print(|| output::room_line(&room), || output::room_json(&room))
        }
        RoomCommand::List => {
            let response = client.list_rooms().await?;
            if response.rooms.is_empty() && !out.json {
                eprintln!("no rooms");
            }
            out.print(
                || output::rooms_text(&response),
                || output::rooms_json(&response),
            )
        }
        RoomCommand::Get { name } => {
            let room = client.room(&name).await?;
            out.print(|| output::room_line(&room), || output::room_json(&room))
        }
        RoomCommand::Update(update) => {
            let room = client.update_room(update.into_request()).await?;
            out.print(|| output::room_line(&room), || output::room_json(&room))
        }
        RoomCommand::Delete { name } => {
            let response = client.delete_room(&name).await?;
            out.print(
                || output::deleted_text(&name, &response),
                || output::deleted_json(&response),
            )
        }
    }
}

async fn camera(client: &Client, out: &Printer, command: CameraCommand) -> Result<(), CtlError> {
    match command {
        CameraCommand::Add(add) => {
            let camera = client.add_camera(add.into_request()?).await?;
            out.print(
                || output::camera_line(&camera),
                || output::camera_json(&camera),
            )
        }
        CameraCommand::Update(update) => {
            let camera = client.update_camera(update.into_request()?).await?;
            out.print(
                || output::camera_line(&camera),
                || output::camera_json(&camera),
            )
        }
        CameraCommand::Remove { room, identity } => {
            client.remove_camera(&room, &identity).await?;
            out.print(
                || output::camera_removed_text(&room, &identity),
                || Value::Object(Default::default()),
            )
        }
        CameraCommand::List { room } => {
            let response = client.list_cameras(&room).await?;
            if response.cameras.is_empty() && !out.json {
                eprintln!("no cameras in {room}");
            }
            out.print(
                || output::cameras_text(&response),
                || output::cameras_json(&response),
            )
        }
    }
}

/// Prints the token alone on stdout (`TOKEN=$(vigil ctl token create ...)`)
/// and what else the server said on stderr; `--json` prints everything.
async fn token(client: &Client, out: &Printer, create: CreateToken) -> Result<(), CtlError> {
    let response = client.create_token(create.into_request()).await?;
    if !out.json {
        eprintln!("{}", output::token_note(&response));
    }
    out.print(|| response.token.clone(), || output::token_json(&response))
}

/// Prints each event as it arrives until the server ends the feed (it shuts
/// down) or the process is interrupted.
async fn watch(client: &Client, out: &Printer, request: pb::WatchRequest) -> Result<(), CtlError> {
    let mut events = client.watch(request).await?;
    // The server subscribed before answering, so from here nothing is missed;
    // scripts (and the tests) wait for this line before acting.
    eprintln!("watching events (Ctrl-C to stop)");
    let mut last = None;
    while let Some(event) = client.next_event(&mut events).await? {
        last = Some(event.id);
        out.print(|| output::event_line(&event), || output::event_json(&event))?;
    }
    match last {
        Some(id) => eprintln!("the server ended the feed; resume with --after-id {id}"),
        None => eprintln!("the server ended the feed"),
    }
    Ok(())
}

impl CreateRoom {
    fn into_request(self) -> pb::CreateRoomRequest {
        pb::CreateRoomRequest {
            name: self.name,
            limits: Some(pb::RoomLimits {
                max_publishers: self.max_publishers,
                max_viewers: self.max_viewers,
            }),
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: self.stall_after_ms,
                min_bitrate_bps: self.min_bitrate_bps,
                max_keyframe_interval_ms: self.max_keyframe_interval_ms,
            }),
        }
    }
}

impl UpdateRoom {
    fn into_request(self) -> pb::UpdateRoomRequest {
        let set = |limit: Option<Limit>| match limit {
            Some(Limit::Max(max)) => Some(max),
            _ => None,
        };
        pb::UpdateRoomRequest {
            name: self.name,
            limits: Some(pb::RoomLimits {
                max_publishers: set(self.max_publishers),
                max_viewers: set(self.max_viewers),
            }),
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: self.stall_after_ms,
                min_bitrate_bps: self.min_bitrate_bps,
                max_keyframe_interval_ms: self.max_keyframe_interval_ms,
            }),
            clear_max_publishers: self.max_publishers == Some(Limit::Unlimited),
            clear_max_viewers: self.max_viewers == Some(Limit::Unlimited),
        }
    }
}

impl CreateToken {
    fn into_request(self) -> pb::CreateTokenRequest {
        pb::CreateTokenRequest {
            room: self.room,
            identity: self.identity,
            grants: Some(pb::Grants {
                publish: self.publish,
                subscribe: self.subscribe,
                admin: self.admin,
            }),
            ttl_seconds: self.ttl_secs,
        }
    }
}

/// Writes results to stdout, as text or as JSON.
struct Printer {
    json: bool,
}

impl Printer {
    /// Prints one result; text that is empty (an empty list) prints nothing.
    fn print(
        &self,
        text: impl FnOnce() -> String,
        json: impl FnOnce() -> Value,
    ) -> Result<(), CtlError> {
        let mut stdout = io::stdout().lock();
        if self.json {
            writeln!(stdout, "{}", json())?;
        } else {
            let text = text();
            if !text.is_empty() {
                writeln!(stdout, "{text}")?;
            }
        }
        stdout.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let parse = |s: &str| s.parse::<ServerUrl>().map(|u| u.0);
        assert_eq!(parse("127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(parse("http://[::1]:9").unwrap(), "http://[::1]:9");
        assert_eq!(
            parse("https://vigil.example:443").unwrap(),
            "https://vigil.example:443"
        );
        assert!(parse("ftp://vigil.example:443").is_err());
        assert!(parse("http://").is_err());
        assert_eq!(ServerUrl::default().0, "http://127.0.0.1:50051");
    }

    /// `vigil ctl ARGS` as the binary parses it.
    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            ctl: CtlArgs,
        }
        let argv = std::iter::once("ctl").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|cli| cli.ctl)
    }

    #[test]
    fn camera_commands_take_the_password_from_the_environment() {
        let var = "VIGIL_CTL_TEST_CAMERA_PASSWORD";
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var(var, "hunter2") };
        let args = parse(&[
            "camera",
            "add",
            "site",
            "gate",
            "rtsp://10.0.0.7/s1",
            "--username",
            "admin",
            "--password-env",
            var,
            "--udp",
            "--on-demand",
        ])
        .unwrap();
        let CtlCommand::Camera(CameraCommand::Add(add)) = args.command else {
            panic!("not camera add");
        };
        let request = add.into_request().unwrap();
        assert_eq!(request.password, "hunter2");
        assert_eq!(request.username, "admin");
        assert_eq!(request.transport, i32::from(pb::CameraTransport::Udp));
        assert!(request.on_demand);

        let args = parse(&[
            "camera",
            "update",
            "site",
            "gate",
            "--on-demand",
            "false",
            "--tcp",
        ])
        .unwrap();
        let CtlCommand::Camera(CameraCommand::Update(update)) = args.command else {
            panic!("not camera update");
        };
        let request = update.into_request().unwrap();
        assert_eq!(request.on_demand, Some(false));
        assert_eq!(request.transport, Some(i32::from(pb::CameraTransport::Tcp)));
        assert_eq!((request.url, request.password), (None, None));

        assert!(
            parse(&["camera", "update", "site", "gate"]).is_err(),
            "nothing to change"
        );
        assert!(parse(&["camera", "update", "site", "gate", "--tcp", "--udp"]).is_err());
        let args = parse(&[
            "camera",
            "add",
            "site",
            "gate",
            "rtsp://h/",
            "--password-env",
            "VIGIL_CTL_TEST_UNSET",
        ])
        .unwrap();
        let CtlCommand::Camera(CameraCommand::Add(add)) = args.command else {
            panic!("not camera add");
        };
        assert!(matches!(
            add.into_request(),
            Err(CtlError::PasswordEnv { .. })
        ));
    }

    #[test]
    fn limits_are_numbers_or_none() {
        assert_eq!("5".parse(), Ok(Limit::Max(5)));
        assert_eq!("none".parse(), Ok(Limit::Unlimited));
        assert!("-1".parse::<Limit>().is_err());
    }

    #[test]
    fn the_example_names_only_what_differs() {
        let data = Path::new(DEFAULT_DATA_DIR);
        assert_eq!(
            example(DEFAULT_GRPC_LISTEN, Some(data), false),
            "vigil ctl room list"
        );
        let other: SocketAddr = "127.0.0.1:15051".parse().unwrap();
        assert_eq!(
            example(other, Some(Path::new("/var/lib/vigil")), false),
            "vigil ctl --server 127.0.0.1:15051 --data-dir /var/lib/vigil room list"
        );
        assert_eq!(
            example(DEFAULT_GRPC_LISTEN, None, false),
            "vigil ctl --admin-key <key> room list"
        );
        assert_eq!(
            example(DEFAULT_GRPC_LISTEN, Some(data), true),
            "vigil ctl --server https://127.0.0.1:50051 room list"
        );
    }
}
