//! The latency floor of one core fanning a frame out over loopback: the
//! kernel's share alone, with no WebRTC, no crypto and no user-space work.
//!
//! One thread (pin it: `taskset -c 0`) plays a perfect forwarder. For each
//! frame it sends `--packets` datagrams of `--size` bytes to each of
//! `--viewers` sockets on 127.0.0.1, the way the media engine's shard
//! sends them: one GSO `sendmsg` per viewer carrying the frame's packets
//! (`--mode gso`), or one `sendto` per datagram, packet-major, round-robin
//! across the viewers (`--mode single`). Each viewer socket stamps what it
//! receives (`SO_TIMESTAMPNS`); a datagram's latency is that stamp minus
//! the moment the frame's first send began, i.e. what vigil-bench calls
//! latency with the publisher's hop and every byte of the server's own
//! work taken out. Frames go out at `--fps`; the sockets are drained
//! between frames, outside the timing.
//!
//! ```text
//! cargo build --release -p vigil-gateway --example loopback_floor
//! taskset -c 0 target/release/examples/loopback_floor [--viewers 200] [--packets 9] [--size 1160] [--frames 300] [--fps 30] [--mode gso|single]
//! ```
//!
//! docs/performance.md ("The latency floor on loopback") has the figures.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use quinn_udp::{Transmit, UdpSocketState};

struct Options {
    viewers: usize,
    packets: usize,
    size: usize,
    frames: usize,
    fps: u32,
    gso: bool,
}

fn options() -> Options {
    let mut options = Options {
        viewers: 200,
        packets: 9,
        size: 1_160,
        frames: 300,
        fps: 30,
        gso: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        let number = || value.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--viewers" => options.viewers = number(),
            "--packets" => options.packets = number(),
            "--size" => options.size = number(),
            "--frames" => options.frames = number(),
            "--fps" => options.fps = number() as u32,
            "--mode" => options.gso = value == "gso",
            other => panic!("unknown flag {other}"),
        }
    }
    options
}

/// CLOCK_REALTIME now, in ns: the clock `SO_TIMESTAMPNS` stamps with.
fn realtime_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

fn viewer_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a viewer");
    socket.set_nonblocking(true).expect("non-blocking");
    let on: libc::c_int = 1;
    let big: libc::c_int = 4 << 20;
    for (option, value) in [(libc::SO_TIMESTAMPNS, on), (libc::SO_RCVBUF, big)] {
        // SAFETY: a valid fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt {option}");
    }
    socket
}

/// Receives every datagram waiting on `socket`, returning each one's
/// kernel receive stamp (ns, CLOCK_REALTIME).
fn drain(socket: &UdpSocket, stamps: &mut Vec<i128>) {
    let mut data = [0u8; 2048];
    let mut control = [0u64; 16];
    loop {
        let mut iov = [IoSliceMut::new(&mut data)];
        // SAFETY: msghdr is plain data; every pointer set below outlives
        // the recvmsg call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: a valid fd and msghdr.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return;
        }
        // SAFETY: walking the control buffer recvmsg filled, with the
        // kernel's own CMSG macros.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::timespec>());
                    stamps.push(ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let options = options();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind the sender");
    let state = UdpSocketState::new((&sender).into()).expect("quinn-udp state");
    let viewers: Vec<UdpSocket> = (0..options.viewers).map(|_| viewer_socket()).collect();
    let addrs: Vec<SocketAddr> = viewers
        .iter()
        .map(|v| v.local_addr().expect("viewer address"))
        .collect();
    let frame: Vec<u8> = vec![0x5a; options.packets * options.size];
    let interval = Duration::from_secs(1) / options.fps;

    let mut latencies_ms = Vec::with_capacity(options.frames * options.packets * addrs.len());
    let mut frame_spans_ms = Vec::with_capacity(options.frames);
    let mut send_time = Duration::ZERO;
    let mut stamps = Vec::new();
    let mut next = Instant::now();
    for _ in 0..options.frames {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let started_ns = realtime_ns();
        let started = Instant::now();
        if options.gso {
            for &destination in &addrs {
                let transmit = Transmit {
                    destination,
                    ecn: None,
                    contents: &frame,
                    segment_size: Some(options.size),
                    src_ip: None,
                };
                state
                    .try_send((&sender).into(), &transmit)
                    .expect("GSO send");
            }
        } else {
            for packet in frame.chunks(options.size) {
                for &destination in &addrs {
                    sender.send_to(packet, destination).expect("send");
                }
            }
        }
        send_time += started.elapsed();
        let mut last = 0f64;
        for viewer in &viewers {
            stamps.clear();
            drain(viewer, &mut stamps);
            assert_eq!(stamps.len(), options.packets, "a viewer missed datagrams");
            for &stamp in &stamps {
                let ms = (stamp - started_ns) as f64 / 1e6;
                last = last.max(ms);
                latencies_ms.push(ms);
            }
        }
        frame_spans_ms.push(last);
    }

    latencies_ms.sort_by(f64::total_cmp);
    frame_spans_ms.sort_by(f64::total_cmp);
    let datagrams = latencies_ms.len();
    println!(
        "{} viewers x {} packets of {} B, {} frames, {}: {:.2} µs of send time per datagram",
        options.viewers,
        options.packets,
        options.size,
        options.frames,
        if options.gso {
            "one GSO send per viewer"
        } else {
            "one sendto per datagram, packet-major"
        },
        send_time.as_secs_f64() * 1e6 / datagrams as f64,
    );
    println!(
        "datagram latency p50 {:.2} ms, p99 {:.2} ms; whole frame delivered p50 {:.2} ms, p99 {:.2} ms",
        quantile(&latencies_ms, 0.5),
        quantile(&latencies_ms, 0.99),
        quantile(&frame_spans_ms, 0.5),
        quantile(&frame_spans_ms, 0.99),
    );
}
