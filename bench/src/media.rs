//! The media thread: one mio loop owning the publisher's and every viewer's
//! `Rtc` and socket, so the whole tool costs one core at most however many
//! viewers it plays.
//!
//! The loop waits for the earliest of: a readable socket, an `Rtc` timeout,
//! the publisher's next packet, or a command. Each input to an `Rtc` is
//! followed by a full drain, as str0m requires. The signalling side talks to
//! the loop only through [`Command`]s; replies go back on oneshot channels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::oneshot;
use tracing::warn;

use crate::metrics::Quantiles;
use crate::peer::Peer;
use crate::publisher::{Published, Publisher};
use crate::sent::SentLog;
use crate::udp;
use crate::viewer::{Arrival, Viewer, Window};

const WAKER: usize = 0;
const PUBLISHER: usize = 1;
const FIRST_VIEWER: usize = 2;

/// The loop sleeps at least this long between rounds, so each round drains
/// many datagrams per wake-up instead of one: with hundreds of viewers,
/// waking per packet costs more than the packets. Measurements do not suffer:
/// arrival times are the kernel's.
const ROUND: Duration = Duration::from_micros(500);

pub enum Command {
    Publish(Box<Publisher>),
    Play(Box<Viewer>),
    SetBitrate(f64),
    /// Whether the publisher is connected.
    Publishing(oneshot::Sender<bool>),
    Joins(oneshot::Sender<Vec<Join>>),
    StartWindow(oneshot::Sender<()>),
    Report(oneshot::Sender<Report>),
    /// Drops every viewer (after their sessions were DELETEd).
    DropViewers(oneshot::Sender<()>),
}

/// One viewer's join, timed from its WHEP POST.
#[derive(Debug, Clone, Copy)]
pub struct Join {
    pub posted_at: Instant,
    pub answered_at: Instant,
    pub connected_at: Option<Instant>,
    pub first_rtp: Option<Instant>,
    pub first_keyframe: Option<Instant>,
}

/// What the window measured.
#[derive(Debug)]
pub struct Report {
    pub packets: u64,
    pub bytes: u64,
    pub keyframe_latency: Option<Quantiles>,
    pub delta_latency: Option<Quantiles>,
    pub unmatched: u64,
    /// Each WHEP endpoint's share, by index (empty with one endpoint).
    pub endpoints: Vec<EndpointReport>,
    pub viewers: Vec<ViewerTotals>,
    pub published: Published,
    /// Datagrams the current peers did not send, since they started.
    pub unsent: u64,
    /// Viewers of this point dropped because their `Rtc` failed.
    pub failed_viewers: u64,
}

/// The window as the viewers of one WHEP endpoint saw it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointReport {
    pub packets: u64,
    pub bytes: u64,
    pub keyframe_latency: Option<Quantiles>,
    pub delta_latency: Option<Quantiles>,
}

/// One viewer's packets over the window, audio and video together.
#[derive(Debug, Clone, Copy)]
pub struct ViewerTotals {
    /// The WHEP endpoint it joined (0 with one).
    pub endpoint: usize,
    pub expected: u64,
    pub lost: u64,
    pub reordered: u64,
}

/// The handle the signalling side holds. Dropping it stops the loop.
pub struct Media {
    /// `None` only while dropping: closing the channel ends the loop.
    commands: Option<mpsc::Sender<Command>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the media loop has stopped")]
pub struct Stopped;

impl Media {
    pub fn spawn() -> io::Result<Media> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(WAKER))?);
        let (commands, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("media".into())
            .spawn(move || {
                let mut media = Loop::new(poll, inbox);
                if let Err(e) = media.run() {
                    warn!("media loop failed: {e}");
                }
            })?;
        Ok(Media {
            commands: Some(commands),
            waker,
            thread: Some(thread),
        })
    }

    pub fn send(&self, command: Command) -> Result<(), Stopped> {
        let commands = self.commands.as_ref().ok_or(Stopped)?;
        commands.send(command).map_err(|_| Stopped)?;
        self.waker.wake().map_err(|_| Stopped)
    }

    pub async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply))?;
        answer.await.map_err(|_| Stopped)
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.commands = None;
        // The loop may already be gone; then there is nothing to wake.
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            // Err only if the loop panicked, which the panic hook has reported.
            let _ = thread.join();
        }
    }
}

struct Loop {
    poll: Poll,
    inbox: mpsc::Receiver<Command>,
    publisher: Option<Publisher>,
    viewers: Vec<Option<Viewer>>,
    failed_viewers: u64,
    /// (deadline, token), earliest first; see [`schedule`].
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Each peer's current deadline and its earliest entry in `timers`.
    deadlines: Vec<(Instant, Option<Instant>)>,
    log: SentLog,
    window: Window,
    published_at_start: Published,
    buf: Vec<u8>,
}

impl Loop {
    fn new(poll: Poll, inbox: mpsc::Receiver<Command>) -> Loop {
        let now = Instant::now();
        Loop {
            poll,
            inbox,
            publisher: None,
            viewers: Vec::new(),
            failed_viewers: 0,
            timers: BinaryHeap::new(),
            deadlines: vec![(now, None); FIRST_VIEWER],
            log: SentLog::default(),
            window: Window::default(),
            published_at_start: Published::default(),
            buf: vec![0; 2048],
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let round = Instant::now();
            let timeout = self.next_wake().map(|at| {
                // Round up: epoll counts whole milliseconds, and waking early spins.
                let wait = at.saturating_duration_since(Instant::now());
                Duration::from_millis(wait.as_nanos().div_ceil(1_000_000) as u64)
            });
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            let mut woken = false;
            for event in &events {
                match event.token().0 {
                    WAKER => woken = true,
                    PUBLISHER => self.read_publisher(),
                    token => self.read_viewer(token),
                }
            }
            if woken && !self.handle_commands() {
                return Ok(());
            }
            let now = Instant::now();
            self.fire_timers(now);
            self.publish(now);
            let next = round + ROUND;
            let wake = self.next_wake().map_or(next, |at| at.min(next));
            std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let media = self.publisher.as_ref().and_then(Publisher::due);
        match (timer, media) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Returns false once the handle is gone.
    fn handle_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(command) => self.handle(command),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn handle(&mut self, command: Command) {
        // A dropped reply receiver means the asker gave up; nothing to do.
        match command {
            Command::Publish(publisher) => self.add_publisher(*publisher),
            Command::Play(viewer) => self.add_viewer(*viewer),
            Command::SetBitrate(bps) => {
                if let Some(p) = &mut self.publisher {
                    p.set_bitrate(bps);
                }
            }
            Command::Publishing(reply) => {
                let _ = reply.send(self.publisher.as_ref().is_some_and(Publisher::is_connected));
            }
            Command::Joins(reply) => {
                let joins = self.viewers.iter().flatten().map(|v| Join {
                    posted_at: v.reception.posted_at,
                    answered_at: v.reception.answered_at,
                    connected_at: v.reception.connected_at,
                    first_rtp: v.reception.first_rtp,
                    first_keyframe: v.reception.first_keyframe,
                });
                let _ = reply.send(joins.collect());
            }
            Command::StartWindow(reply) => {
                self.start_window();
                let _ = reply.send(());
            }
            Command::Report(reply) => {
                let _ = reply.send(self.report());
            }
            Command::DropViewers(reply) => {
                self.viewers.clear();
                self.failed_viewers = 0;
                self.deadlines.truncate(FIRST_VIEWER);
                self.timers
                    .retain(|Reverse((_, token))| *token < FIRST_VIEWER);
                let _ = reply.send(());
            }
        }
    }

    fn add_publisher(&mut self, mut publisher: Publisher) {
        let registered = self.poll.registry().register(
            publisher.peer.socket_mut(),
            Token(PUBLISHER),
            Interest::READABLE,
        );
        if let Err(e) = registered {
            warn!("publisher socket: {e}");
            return;
        }
        // A first timeout starts str0m's ICE agent: until it has had one it
        // sends no check of its own and waits for the server's. An ICE-lite
        // server (live777's default, Vigil's engine) sends none.
        let now = Instant::now();
        match publisher.peer.timeout(now).and_then(|()| publisher.drain()) {
            Ok(deadline) => {
                schedule(&mut self.timers, &mut self.deadlines, PUBLISHER, deadline);
                self.publisher = Some(publisher);
            }
            Err(e) => warn!("publisher: {e}"),
        }
    }

    fn add_viewer(&mut self, mut viewer: Viewer) {
        let token = FIRST_VIEWER + self.viewers.len();
        // No datagram yet: str0m only emits RTP right after one.
        let arrival = Arrival {
            at: Instant::now(),
            wall_ns: udp::now_ns(),
            len: 0,
        };
        self.deadlines.push((arrival.at, None));
        let registry = self.poll.registry();
        let started =
            match registry.register(viewer.peer.socket_mut(), Token(token), Interest::READABLE) {
                // A first timeout starts ICE checks (see `add_publisher`).
                Ok(()) => viewer
                    .peer
                    .timeout(arrival.at)
                    .and_then(|()| viewer.drain(arrival, &self.log, &mut self.window))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        match started {
            Ok(deadline) => {
                schedule(&mut self.timers, &mut self.deadlines, token, deadline);
                self.viewers.push(Some(viewer));
            }
            Err(e) => {
                warn!("viewer: {e}");
                self.failed_viewers += 1;
                self.viewers.push(None);
            }
        }
    }

    fn read_publisher(&mut self) {
        let Some(publisher) = &mut self.publisher else {
            return;
        };
        let mut last = None;
        loop {
            let datagram = match udp::recv(publisher.peer.socket(), &mut self.buf) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("publisher socket: {e}");
                    continue;
                }
            };
            let result = publisher
                .peer
                .receive(Instant::now(), &datagram, &self.buf)
                .and_then(|()| publisher.drain());
            match result {
                Ok(deadline) => last = Some(deadline),
                Err(e) => warn!("publisher: {e}"),
            }
        }
        if let Some(deadline) = last {
            schedule(&mut self.timers, &mut self.deadlines, PUBLISHER, deadline);
        }
    }

    fn read_viewer(&mut self, token: usize) {
        let slot = token - FIRST_VIEWER;
        let Some(viewer) = self.viewers.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut last = None;
        loop {
            let datagram = match udp::recv(viewer.peer.socket(), &mut self.buf) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("viewer socket: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            // The kernel's timestamp, moved onto the loop's clock.
            let age = Duration::from_nanos(udp::now_ns().saturating_sub(datagram.wall_ns));
            let arrival = Arrival {
                at: now.checked_sub(age).unwrap_or(now),
                wall_ns: datagram.wall_ns,
                len: datagram.len,
            };
            let result = viewer
                .peer
                .receive(now, &datagram, &self.buf)
                .and_then(|()| viewer.drain(arrival, &self.log, &mut self.window));
            match result {
                Ok(deadline) => last = Some(deadline),
                Err(e) => {
                    warn!("viewer {slot}: {e}; dropping it");
                    self.failed_viewers += 1;
                    self.viewers[slot] = None;
                    return;
                }
            }
        }
        if let Some(deadline) = last {
            schedule(&mut self.timers, &mut self.deadlines, token, deadline);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, token))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some((deadline, queued)) = self.deadlines.get_mut(token) else {
                continue;
            };
            if *queued != Some(at) {
                continue; // superseded by an earlier entry
            }
            *queued = None;
            let deadline = *deadline;
            if deadline > now {
                schedule(&mut self.timers, &mut self.deadlines, token, deadline);
                continue;
            }
            self.timeout(token, now);
        }
    }

    fn timeout(&mut self, token: usize, now: Instant) {
        let result = if token == PUBLISHER {
            let Some(publisher) = &mut self.publisher else {
                return;
            };
            publisher.peer.timeout(now).and_then(|()| publisher.drain())
        } else {
            let Some(viewer) = self.viewers[token - FIRST_VIEWER].as_mut() else {
                return;
            };
            let arrival = Arrival {
                at: now,
                wall_ns: udp::now_ns(),
                len: 0,
            };
            viewer
                .peer
                .timeout(now)
                .and_then(|()| viewer.drain(arrival, &self.log, &mut self.window))
        };
        match result {
            Ok(deadline) => schedule(&mut self.timers, &mut self.deadlines, token, deadline),
            Err(e) => warn!("timeout of peer {token}: {e}"),
        }
    }

    fn publish(&mut self, now: Instant) {
        let Some(publisher) = &mut self.publisher else {
            return;
        };
        if publisher.due().is_none_or(|due| due > now) {
            return;
        }
        if let Err(e) = publisher.send_due(now, &mut self.log) {
            warn!("publishing: {e}");
        }
        match publisher.drain() {
            Ok(deadline) => schedule(&mut self.timers, &mut self.deadlines, PUBLISHER, deadline),
            Err(e) => warn!("publisher: {e}"),
        }
    }

    fn start_window(&mut self) {
        self.window = Window::default();
        for viewer in self.viewers.iter_mut().flatten() {
            viewer.reception.start_window();
        }
        if let Some(p) = &self.publisher {
            self.published_at_start = p.published;
        }
    }

    fn report(&self) -> Report {
        let published = self
            .publisher
            .as_ref()
            .map(|p| p.published)
            .unwrap_or_default();
        let peers = self
            .viewers
            .iter()
            .flatten()
            .map(|v| &v.peer)
            .chain(self.publisher.as_ref().map(|p| &p.peer));
        Report {
            packets: self.window.packets,
            bytes: self.window.bytes,
            keyframe_latency: self.window.keyframe_latency.summary_milli(),
            delta_latency: self.window.delta_latency.summary_milli(),
            unmatched: self.window.unmatched,
            endpoints: self
                .window
                .endpoints
                .iter()
                .map(|e| EndpointReport {
                    packets: e.packets,
                    bytes: e.bytes,
                    keyframe_latency: e.keyframe_latency.summary_milli(),
                    delta_latency: e.delta_latency.summary_milli(),
                })
                .collect(),
            viewers: self
                .viewers
                .iter()
                .flatten()
                .map(|v| {
                    let (a, b) = (v.reception.audio, v.reception.video);
                    ViewerTotals {
                        endpoint: v.reception.endpoint.unwrap_or(0),
                        expected: a.expected() + b.expected(),
                        lost: a.lost() + b.lost(),
                        reordered: a.reordered + b.reordered,
                    }
                })
                .collect(),
            published: Published {
                packets: published.packets - self.published_at_start.packets,
                keyframe_requests: published.keyframe_requests
                    - self.published_at_start.keyframe_requests,
            },
            unsent: peers.map(|p: &Peer| p.unsent).sum(),
            failed_viewers: self.failed_viewers,
        }
    }
}

/// Records `token`'s new deadline, adding a timer entry only when it is
/// earlier than the one already queued; later entries are re-queued when the
/// earlier one fires. This keeps the heap near one entry per peer although
/// every input moves a deadline.
fn schedule(
    timers: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    deadlines: &mut [(Instant, Option<Instant>)],
    token: usize,
    deadline: Instant,
) {
    let (current, queued) = &mut deadlines[token];
    *current = deadline;
    if queued.is_none_or(|q| deadline < q) {
        *queued = Some(deadline);
        timers.push(Reverse((deadline, token)));
    }
}
