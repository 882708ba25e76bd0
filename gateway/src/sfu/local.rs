//! Publishers inside the process: an RTSP camera's puller publishes its
//! stream through [`Sfu::publish_local`] and gets a [`LocalPublisher`],
//! a session like a WHIP publisher's (the owner reserves and commits it,
//! the control plane sees it join and leave) whose packets enter the
//! engine from the puller's task instead of over a connection. A relay
//! ([`crate::relay`]) publishes another node's stream the same way, with
//! [`LocalOptions`] that keep it out of the control plane's sight and send
//! its keyframe requests back to it.

use rtc::rtp;
use tokio::sync::mpsc;
use vigil_control::{RoomName, StreamName};

use super::codecs::TrackCodec;
use super::registry::{CloseReason, EngineConn, Msg};
use super::{SessionId, Sfu};
use crate::engine::shard::LocalTrack;
use crate::error::{Error, Result};

/// How a local publisher's session differs from a camera's.
#[derive(Debug, Default)]
pub struct LocalOptions {
    /// Plumbing, not a participant: the control plane is told nothing
    /// (no joined, track or left facts, no stream samples). A relay is
    /// quiet: the origin already reports the real publisher.
    pub quiet: bool,
    /// Where keyframe requests for its tracks go (a viewer's PLI, a join),
    /// one `()` per request, uncoalesced; `None`: nobody can be asked (a
    /// camera), viewers start from the cached keyframe.
    pub keyframe_requests: Option<mpsc::UnboundedSender<()>>,
}

/// A local publisher's session. Dropping it ends the session (its viewers
/// wait for a republish, as when a WHIP publisher leaves).
pub struct LocalPublisher {
    sfu: Sfu,
    session: SessionId,
    conn: EngineConn,
}

impl LocalPublisher {
    /// Its session id.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// Forwards packets, each on one of its tracks' SSRCs. `false` once
    /// the engine has stopped.
    pub fn send(&self, packets: Vec<rtp::Packet>) -> bool {
        self.sfu
            .engine
            .shards()
            .get(self.conn.shard)
            .is_some_and(|shard| shard.send_local(self.conn.conn, packets))
    }
}

impl Drop for LocalPublisher {
    fn drop(&mut self) {
        self.sfu.tell(Msg::Close {
            session: self.session.clone(),
            reason: CloseReason::PeerClosed,
            reply: None,
        });
    }
}

impl Sfu {
    /// Publishes `room`/`stream` as `identity` from inside the process:
    /// `codecs` are what viewers negotiate (one per kind), `tracks` the
    /// engine's view of the same tracks (the SSRCs the packets will carry).
    /// Fails as a WHIP POST would if the stream already has a publisher.
    pub async fn publish_local(
        &self,
        room: RoomName,
        stream: StreamName,
        identity: String,
        codecs: Vec<TrackCodec>,
        tracks: Vec<LocalTrack>,
        options: LocalOptions,
    ) -> Result<LocalPublisher> {
        let session = SessionId::random();
        let span = crate::telemetry::spans::session(
            "publisher",
            &room,
            &stream,
            session.as_str(),
            &identity,
        );
        self.ask(|reply| Msg::ReservePublish {
            room,
            stream,
            session: session.clone(),
            identity,
            may_replace: false,
            local: options,
            span: span.clone(),
            reply,
        })
        .await??;
        let shard = self.engine.next_shard();
        let Some(conn) = shard.add_local(tracks).await else {
            self.tell(Msg::Cancel { session });
            return Err(Error::ShuttingDown);
        };
        let conn = EngineConn {
            shard: shard.index(),
            conn,
        };
        self.ask(|reply| Msg::CommitPublish {
            session: session.clone(),
            conn,
            codecs,
            etag: String::new(),
            slot: None,
            reply,
        })
        .await??;
        Ok(LocalPublisher {
            sfu: self.clone(),
            session,
            conn,
        })
    }

    /// Closes `room`/`stream`'s publisher and its viewers at once (a
    /// camera removed: nobody will come back to it). Returns how many
    /// sessions closed.
    pub async fn close_stream(&self, room: &RoomName, stream: &StreamName) -> usize {
        self.ask(|reply| Msg::CloseStream {
            room: room.clone(),
            stream: stream.clone(),
            reply,
        })
        .await
        .unwrap_or(0)
    }

    /// Whether `room`/`stream` has a committed publisher here (its viewers
    /// can be answered now).
    pub async fn is_published(&self, room: &RoomName, stream: &StreamName) -> bool {
        self.ask(|reply| Msg::PublishedCodecs {
            room: room.clone(),
            stream: stream.clone(),
            reply,
        })
        .await
        .is_ok_and(|codecs| codecs.is_ok())
    }

    /// How many viewer sessions `room`/`stream` has (connected or not).
    pub async fn viewer_count(&self, room: &RoomName, stream: &StreamName) -> usize {
        self.ask(|reply| Msg::Viewers {
            room: room.clone(),
            stream: stream.clone(),
            reply,
        })
        .await
        .unwrap_or(0)
    }
}
