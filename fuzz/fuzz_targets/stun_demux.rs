//! Datagrams arriving on the media port, as the shard's demultiplexer sees
//! them: STUN checks routed by USERNAME, anything else by a source path
//! (UDP address or ICE-TCP connection) a check has proven. The input is a
//! sequence of datagrams, each from one of a few paths, against two
//! connections with known ufrags.
//! Properties: never a panic; a datagram is only ever routed to a
//! registered connection; a non-STUN datagram from an address no answered
//! check has taught is never routed.
#![no_main]
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use vigil_gateway::engine::demux::{Demux, Peer};

fuzz_target!(|data: &[u8]| {
    let mut demux: Demux<u8> = Demux::new();
    demux.add_ufrag(1, "srv1");
    demux.add_ufrag(2, "srv2");
    let addrs: [SocketAddr; 4] = [
        "127.0.0.1:4000".parse().unwrap(),
        "127.0.0.1:4001".parse().unwrap(),
        "[::1]:4002".parse().unwrap(),
        "10.0.0.9:4003".parse().unwrap(),
    ];
    // Each datagram: one byte of source (index, low bit TCP), two of
    // length, then the bytes.
    let mut rest = data;
    while rest.len() >= 3 {
        let addr = addrs[usize::from(rest[0] >> 1) % addrs.len()];
        let from = if rest[0] & 1 == 0 {
            Peer::udp(addr)
        } else {
            Peer::tcp(addr)
        };
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let datagram = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let stun = datagram.len() >= 20 && datagram[0] < 4;
        let taught = demux.addrs(1).contains(&from) || demux.addrs(2).contains(&from);
        if let Some(conn) = demux.route(from, datagram) {
            assert!(conn == 1 || conn == 2, "routed to an unknown connection");
            assert!(stun || taught, "media from an unproven address routed");
            // The connection answers: the demultiplexer may learn `from`.
            let _ = demux.on_transmit(conn, from, datagram);
        }
    }
    demux.forget_ufrag("srv1");
    let tcp_paths = demux.addrs(2).iter().filter(|p| p.is_tcp()).count();
    while demux.poll_released().is_some() {}
    demux.remove(2);
    assert!(demux.addrs(2).is_empty());
    let mut released = 0;
    while demux.poll_released().is_some() {
        released += 1;
    }
    assert_eq!(
        released, tcp_paths,
        "every TCP path of a removed connection is released"
    );
});
