//! Which connection a datagram on the shared media port belongs to, and
//! where a connection's datagrams go.
//!
//! All of a shard's WebRTC media arrives on one UDP socket, so the engine
//! routes each datagram to its peer connection itself, the way mediasoup's
//! `WebRtcServer` does:
//!
//! - A STUN request names its connection: its USERNAME is
//!   `<server ufrag>:<client ufrag>`, and the server ufrag is the one the
//!   engine gave that connection (`SettingEngineBuilder::with_ice_credentials`).
//! - Everything else (DTLS, SRTP, SRTCP, STUN responses) is routed by its
//!   source address, which becomes known only when the connection has
//!   answered a connectivity check from it with a Binding success. `rtc`
//!   sends that success only for a request whose USERNAME and
//!   MESSAGE-INTEGRITY checked out against the connection's credentials, so
//!   an address is learned only from a peer that knows the ICE password.
//!   Once ICE is up, `rtc` itself accepts non-STUN datagrams from any source:
//!   this map is the only source check.
//!
//! A connection keeps the few addresses it has been checked from, newest
//! last. A success that answers a check carrying USE-CANDIDATE (the
//! client's nomination) leaves that address alone. A later check from a new
//! address, as after a NAT rebinding, adds it and makes it the connection's
//! current address: media (non-STUN datagrams) is sent there, whatever
//! selected pair `rtc` still holds, so a rebound viewer keeps playing after
//! its next check. STUN goes where `rtc` addresses it.
//!
//! A path is a [`Peer`]: a UDP source address, or a TCP connection to the
//! shard's ICE-TCP port (RFC 6544), named by its remote address. TCP is
//! the fallback for networks that block UDP, so a TCP path becomes a
//! connection's current one only if it is nominated or no UDP path is
//! current; a TCP path the demultiplexer no longer routes is released,
//! for the socket loop to close ([`Demux::poll_released`]).
//!
//! Plain data: no sockets, no clock. The engine calls [`Demux::route`] for
//! each received datagram and [`Demux::on_transmit`] for each one a
//! connection polls out.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use rtc::stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::message::{
    BINDING_REQUEST, BINDING_SUCCESS, Message, TransactionId, is_stun_message,
};

/// Addresses one connection may send from at once: a client's checked
/// candidates (interfaces, IPv4 and IPv6) and, after a rebinding, the new
/// one while the old is still in flight.
pub const MAX_ADDRS_PER_CONNECTION: usize = 4;

/// How a peer reaches the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Datagrams on the shard's UDP socket.
    Udp,
    /// RFC 4571 frames on a TCP connection to the shard's ICE-TCP port.
    Tcp,
}

/// One end of a path to the shard: where a peer's datagrams come from and
/// where the shard's go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// The peer's address: its UDP source, or its end of the TCP
    /// connection (which names the connection, the shard's end being
    /// fixed).
    pub addr: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
}

impl Peer {
    /// A UDP source address.
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            transport: Transport::Udp,
        }
    }

    /// The TCP connection from `addr`.
    pub fn tcp(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            transport: Transport::Tcp,
        }
    }

    /// Whether this is a TCP connection.
    pub fn is_tcp(self) -> bool {
        self.transport == Transport::Tcp
    }
}

/// Routes datagrams between one shared socket and the connections behind it.
#[derive(Debug)]
pub struct Demux<C> {
    by_ufrag: HashMap<String, C>,
    by_addr: HashMap<Peer, C>,
    connections: HashMap<C, Paths>,
    /// TCP connections no connection routes any more, to be closed.
    released: Vec<SocketAddr>,
}

/// What the demultiplexer knows of one connection.
#[derive(Debug, Default)]
struct Paths {
    ufrags: Vec<String>,
    /// Checked paths, the current one last.
    addrs: Vec<Peer>,
    /// Checks carrying USE-CANDIDATE, not yet answered.
    nominations: Vec<TransactionId>,
}

impl<C> Default for Demux<C> {
    fn default() -> Self {
        Demux {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            connections: HashMap::new(),
            released: Vec::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> Demux<C> {
    /// An empty demultiplexer.
    pub fn new() -> Self {
        Demux::default()
    }

    /// Routes STUN checks for `ufrag` to `conn`. Called when the connection
    /// is created and again with the new ufrag at an ICE restart (the old
    /// one keeps working until [`Demux::forget_ufrag`]).
    pub fn add_ufrag(&mut self, conn: C, ufrag: &str) {
        self.by_ufrag.insert(ufrag.to_owned(), conn);
        let paths = self.connections.entry(conn).or_default();
        if !paths.ufrags.iter().any(|u| u == ufrag) {
            paths.ufrags.push(ufrag.to_owned());
        }
    }

    /// Stops routing checks for `ufrag` (the ICE restart is done).
    pub fn forget_ufrag(&mut self, ufrag: &str) {
        if let Some(conn) = self.by_ufrag.remove(ufrag)
            && let Some(paths) = self.connections.get_mut(&conn)
        {
            paths.ufrags.retain(|u| u != ufrag);
        }
    }

    /// Forgets `conn`: its ufrags and addresses route nowhere any more.
    pub fn remove(&mut self, conn: C) {
        if let Some(paths) = self.connections.remove(&conn) {
            for ufrag in paths.ufrags {
                self.by_ufrag.remove(&ufrag);
            }
            for addr in paths.addrs {
                self.unroute(addr);
            }
        }
    }

    /// Forgets the path `peer` (its TCP connection has closed): media of
    /// the connection that used it goes to its previous path, if any.
    pub fn forget_path(&mut self, peer: Peer) {
        if let Some(conn) = self.by_addr.remove(&peer)
            && let Some(paths) = self.connections.get_mut(&conn)
        {
            paths.addrs.retain(|a| *a != peer);
        }
    }

    /// The next TCP connection no connection routes any more (its
    /// connection is gone, or chose another path): the socket loop closes
    /// it.
    pub fn poll_released(&mut self) -> Option<SocketAddr> {
        self.released.pop()
    }

    fn unroute(&mut self, peer: Peer) {
        self.by_addr.remove(&peer);
        if peer.is_tcp() {
            self.released.push(peer.addr);
        }
    }

    /// The connection a datagram from `from` belongs to, if any. A STUN
    /// request goes by its USERNAME, anything else by its checked source.
    pub fn route(&mut self, from: Peer, datagram: &[u8]) -> Option<C> {
        if is_stun(datagram)
            && let Some(request) = decode_stun(datagram).filter(|m| m.typ == BINDING_REQUEST)
        {
            let conn = server_ufrag(&request).and_then(|ufrag| self.by_ufrag.get(ufrag).copied());
            if let Some(conn) = conn
                && request.contains(ATTR_USE_CANDIDATE)
                && let Some(paths) = self.connections.get_mut(&conn)
            {
                paths.nominations.push(request.transaction_id);
                // Unanswered ones (a failed check) must not pile up.
                let excess = paths.nominations.len().saturating_sub(8);
                paths.nominations.drain(..excess);
            }
            return conn;
        }
        self.by_addr.get(&from).copied()
    }

    /// Where a datagram that `conn` polled out for `to` is sent. A Binding
    /// success teaches the demultiplexer `to`; STUN goes to `to`, media to
    /// the connection's current address.
    pub fn on_transmit(&mut self, conn: C, to: Peer, datagram: &[u8]) -> Peer {
        if is_stun(datagram) {
            if let Some(response) = decode_stun(datagram).filter(|m| m.typ == BINDING_SUCCESS) {
                self.learn(conn, to, response.transaction_id);
            }
            return to;
        }
        self.current_addr(conn).unwrap_or(to)
    }

    /// The path `conn`'s media goes to: the one it was last checked on.
    pub fn current_addr(&self, conn: C) -> Option<Peer> {
        self.connections.get(&conn)?.addrs.last().copied()
    }

    /// The paths `conn` has been checked on, the current one last.
    pub fn addrs(&self, conn: C) -> &[Peer] {
        self.connections.get(&conn).map_or(&[], |p| &p.addrs)
    }

    fn learn(&mut self, conn: C, addr: Peer, transaction: TransactionId) {
        if !self.connections.contains_key(&conn) {
            return; // removed meanwhile
        }
        // An address is one peer's: if another connection had it, that
        // peer's NAT mapping has gone to this one.
        if let Some(previous) = self.by_addr.insert(addr, conn)
            && previous != conn
            && let Some(other) = self.connections.get_mut(&previous)
        {
            other.addrs.retain(|a| *a != addr);
        }
        let Some(paths) = self.connections.get_mut(&conn) else {
            return;
        };
        paths.addrs.retain(|a| *a != addr);
        let nominated = paths.nominations.iter().position(|t| *t == transaction);
        if let Some(i) = nominated {
            paths.nominations.remove(i);
        }
        match paths.addrs.last() {
            // A TCP path checked while a UDP one is current stays a spare:
            // a client checks its fallback pairs too, and TCP should carry
            // media only when chosen or when nothing else works.
            Some(current) if addr.is_tcp() && !current.is_tcp() && nominated.is_none() => {
                let at = paths.addrs.len() - 1;
                paths.addrs.insert(at, addr);
            }
            _ => paths.addrs.push(addr),
        }
        let keep = if nominated.is_some() {
            // The client chose this path: the others were only candidates.
            1
        } else {
            MAX_ADDRS_PER_CONNECTION
        };
        let excess = paths.addrs.len().saturating_sub(keep);
        let dropped: Vec<Peer> = paths.addrs.drain(..excess).collect();
        for old in dropped {
            self.unroute(old);
        }
    }
}

fn decode_stun(datagram: &[u8]) -> Option<Message> {
    let mut message = Message::new();
    message.raw = datagram.to_vec();
    message.decode().ok()?;
    Some(message)
}

/// The server's half of a check's USERNAME (`server:client`).
fn server_ufrag(request: &Message) -> Option<&str> {
    let (_, value) = request
        .attributes
        .0
        .iter()
        .map(|a| (a.typ, &a.value))
        .find(|(typ, _)| *typ == ATTR_USERNAME)?;
    let username = std::str::from_utf8(value).ok()?;
    username.split(':').next()
}

/// A STUN message by RFC 7983's demultiplexing (first byte 0-3: the two
/// top bits of every STUN message are zero, RFC 8489 §5) and its magic
/// cookie. webrtc-rs's `is_stun_message` checks the cookie alone, so a
/// datagram of another kind that happens to carry the cookie (found by
/// `fuzz/fuzz_targets/stun_demux.rs`: first byte 0x40) was routed by the
/// USERNAME it seemed to carry.
fn is_stun(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|&b| b < 4) && is_stun_message(datagram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::Setter;
    use rtc::stun::textattrs::TextAttribute;

    fn addr(last: u8, port: u16) -> Peer {
        Peer::udp(SocketAddr::from(([192, 0, 2, last], port)))
    }

    fn request(username: &str, nominate: bool) -> Message {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        ];
        if nominate {
            setters.push(Box::new(
                rtc::ice::attributes::use_candidate::UseCandidateAttr,
            ));
        }
        m.build(&setters).expect("request");
        m
    }

    fn success(to: &Message) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[Box::new(to.clone()), Box::new(BINDING_SUCCESS)])
            .expect("success");
        m.raw
    }

    /// An SRTP-looking datagram (RFC 7983: first byte 128-191).
    const MEDIA: &[u8] = &[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn checks_go_by_ufrag_and_media_only_from_checked_addresses() {
        let mut demux = Demux::new();
        demux.add_ufrag(1, "s1");
        demux.add_ufrag(2, "s2");
        let (a, b) = (addr(1, 5000), addr(2, 5000));

        let check = request("s2:c", false);
        assert_eq!(demux.route(a, &check.raw), Some(2), "by USERNAME");
        assert_eq!(demux.route(a, &request("s9:c", false).raw), None);
        assert_eq!(demux.route(a, MEDIA), None, "not checked yet");

        assert_eq!(demux.on_transmit(2, a, &success(&check)), a);
        assert_eq!(demux.route(a, MEDIA), Some(2));
        assert_eq!(
            demux.route(b, MEDIA),
            None,
            "another source is not the viewer"
        );
        assert_eq!(
            demux.on_transmit(2, b, MEDIA),
            a,
            "media to the checked address"
        );
    }

    #[test]
    fn only_what_rfc_7983_calls_stun_goes_by_username() {
        let mut demux = Demux::new();
        demux.add_ufrag(1, "s1");
        let mut check = request("s1:c", false).raw;
        assert_eq!(demux.route(addr(1, 5000), &check), Some(1));
        // The same bytes with a first byte of another kind (64-79: TURN
        // channel data) are not a check, and come from no checked address.
        check[0] = 0x40;
        assert_eq!(demux.route(addr(1, 5000), &check), None);
    }

    #[test]
    fn a_rebound_client_moves_after_its_next_check() {
        let mut demux = Demux::new();
        demux.add_ufrag(7, "s7");
        let (old, new) = (addr(1, 5000), addr(1, 6000));
        let nomination = request("s7:c", true);
        demux.route(old, &nomination.raw);
        demux.on_transmit(7, old, &success(&nomination));
        assert_eq!(demux.current_addr(7), Some(old));

        let consent = request("s7:c", false);
        assert_eq!(demux.route(new, &consent.raw), Some(7));
        demux.on_transmit(7, new, &success(&consent));
        assert_eq!(demux.current_addr(7), Some(new));
        assert_eq!(demux.on_transmit(7, old, MEDIA), new, "media follows");
        assert_eq!(demux.route(new, MEDIA), Some(7));
    }

    #[test]
    fn a_nomination_drops_the_other_candidate_addresses() {
        let mut demux = Demux::new();
        demux.add_ufrag(3, "s3");
        let (wifi, lte) = (addr(1, 5000), addr(9, 7000));
        let check = request("s3:c", false);
        demux.route(lte, &check.raw);
        demux.on_transmit(3, lte, &success(&check));
        let nomination = request("s3:c", true);
        demux.route(wifi, &nomination.raw);
        demux.on_transmit(3, wifi, &success(&nomination));
        assert_eq!(demux.addrs(3), &[wifi]);
        assert_eq!(demux.route(lte, MEDIA), None);
    }

    #[test]
    fn addresses_are_bounded_and_move_between_connections() {
        let mut demux = Demux::new();
        demux.add_ufrag(1, "s1");
        demux.add_ufrag(2, "s2");
        for port in 0..10 {
            let check = request("s1:c", false);
            demux.on_transmit(1, addr(1, port), &success(&check));
        }
        assert_eq!(demux.addrs(1).len(), MAX_ADDRS_PER_CONNECTION);
        assert_eq!(demux.route(addr(1, 0), MEDIA), None, "the oldest went");

        let check = request("s2:c", false);
        demux.on_transmit(2, addr(1, 9), &success(&check));
        assert_eq!(demux.route(addr(1, 9), MEDIA), Some(2));
        assert!(!demux.addrs(1).contains(&addr(1, 9)));
    }

    #[test]
    fn an_ice_restart_adds_a_ufrag_and_removal_forgets_everything() {
        let mut demux = Demux::new();
        demux.add_ufrag(4, "old");
        demux.add_ufrag(4, "new");
        let from = addr(4, 4000);
        assert_eq!(demux.route(from, &request("new:c", false).raw), Some(4));
        demux.forget_ufrag("old");
        assert_eq!(demux.route(from, &request("old:c", false).raw), None);

        let check = request("new:c", false);
        demux.on_transmit(4, from, &success(&check));
        demux.remove(4);
        assert_eq!(demux.route(from, MEDIA), None);
        assert_eq!(demux.route(from, &check.raw), None);
        assert_eq!(
            demux.on_transmit(4, from, MEDIA),
            from,
            "unknown: as polled"
        );
    }

    #[test]
    fn a_tcp_path_is_a_spare_until_chosen_and_released_when_dropped() {
        let mut demux = Demux::new();
        demux.add_ufrag(5, "s5");
        let udp = addr(1, 5000);
        let tcp = Peer::tcp(SocketAddr::from(([192, 0, 2, 1], 40_000)));
        let check = request("s5:c", false);
        demux.route(udp, &check.raw);
        demux.on_transmit(5, udp, &success(&check));
        let tcp_check = request("s5:c", false);
        assert_eq!(demux.route(tcp, &tcp_check.raw), Some(5));
        demux.on_transmit(5, tcp, &success(&tcp_check));
        assert_eq!(demux.current_addr(5), Some(udp), "UDP stays current");
        assert_eq!(demux.route(tcp, MEDIA), Some(5), "both are routed");
        assert_eq!(demux.on_transmit(5, udp, MEDIA), udp);

        // UDP stops working; the client nominates its TCP pair.
        let nomination = request("s5:c", true);
        demux.route(tcp, &nomination.raw);
        demux.on_transmit(5, tcp, &success(&nomination));
        assert_eq!(demux.addrs(5), &[tcp]);
        assert_eq!(demux.on_transmit(5, udp, MEDIA), tcp, "media over TCP");
        assert_eq!(
            demux.poll_released(),
            None,
            "a UDP path has nothing to close"
        );

        demux.remove(5);
        assert_eq!(demux.poll_released(), Some(tcp.addr));
        assert_eq!(demux.poll_released(), None);
    }

    #[test]
    fn a_closed_tcp_path_hands_media_back_to_the_previous_one() {
        let mut demux = Demux::new();
        demux.add_ufrag(6, "s6");
        let udp = addr(2, 5000);
        let tcp = Peer::tcp(SocketAddr::from(([192, 0, 2, 2], 40_001)));
        for path in [tcp, udp] {
            let check = request("s6:c", false);
            demux.on_transmit(6, path, &success(&check));
        }
        assert_eq!(demux.addrs(6), &[tcp, udp]);
        let again = request("s6:c", false);
        demux.on_transmit(6, tcp, &success(&again));
        assert_eq!(demux.current_addr(6), Some(udp), "still the spare");

        // With only TCP checked, TCP is current; when it closes, nothing is.
        demux.forget_path(udp);
        assert_eq!(demux.current_addr(6), Some(tcp));
        demux.forget_path(tcp);
        assert_eq!(demux.current_addr(6), None);
        assert_eq!(demux.route(tcp, MEDIA), None);
    }

    #[test]
    fn garbage_routes_nowhere() {
        let mut demux: Demux<u8> = Demux::new();
        demux.add_ufrag(1, "s1");
        let mut fake = request("s1:c", false).raw;
        fake.truncate(22); // a STUN header with a cut attribute
        assert_eq!(demux.route(addr(1, 1), &fake), None);
        assert_eq!(demux.route(addr(1, 1), &[]), None);
    }
}
