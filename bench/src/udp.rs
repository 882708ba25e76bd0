//! The media sockets: UDP on 127.0.0.1 only, non-blocking for the media
//! loop, with a large receive buffer and the kernel's receive timestamp on
//! every datagram.
//!
//! The timestamp is taken when the datagram reaches the socket, so the
//! latency a viewer measures is the server's, not the time this tool took to
//! get round to reading it.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;

/// A keyframe burst lands on every viewer's socket at once while the loop
/// serves the others; the kernel caps this at `net.core.rmem_max`.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// One received datagram: its length in the caller's buffer, where it came
/// from and when the kernel queued it (ns since the Unix epoch).
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    pub len: usize,
    pub source: SocketAddr,
    pub wall_ns: u64,
}

pub fn bind_loopback() -> io::Result<UdpSocket> {
    let socket = StdSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_nonblocking(true)?;
    let fd = socket.as_raw_fd();
    set_option(fd, libc::SO_RCVBUF, RECEIVE_BUFFER)?;
    set_option(fd, libc::SO_TIMESTAMPNS, 1)?;
    Ok(UdpSocket::from_std(socket))
}

/// Reads one datagram; `WouldBlock` when the socket is drained.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    socket.try_io(|| recv_raw(socket.as_raw_fd(), buf))
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn set_option(fd: RawFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn recv_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);

    // SAFETY: every pointer in `msg` points at a live local of the size given.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram truncated",
        ));
    }

    let mut wall_ns = None;
    // SAFETY: the kernel filled `msg.msg_control` with well-formed cmsgs up
    // to `msg_controllen`; the CMSG_* macros stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = libc::CMSG_DATA(cmsg)
                    .cast::<libc::timespec>()
                    .read_unaligned();
                wall_ns = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }

    if i32::from(addr.ss_family) != libc::AF_INET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an IPv4 source",
        ));
    }
    // SAFETY: ss_family says the storage holds a sockaddr_in.
    let v4 = unsafe { &*(&raw const addr).cast::<libc::sockaddr_in>() };
    let source = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
        u16::from_be(v4.sin_port),
    );
    Ok(Datagram {
        len: n as usize,
        source: source.into(),
        wall_ns: wall_ns.unwrap_or_else(now_ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_carry_source_and_a_kernel_timestamp() {
        let rx = bind_loopback().unwrap();
        let tx = StdSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let before = now_ns();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let got = loop {
            match recv(&rx, &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                other => break other.unwrap(),
            }
        };
        assert_eq!(&buf[..got.len], b"hello");
        assert_eq!(got.source, tx.local_addr().unwrap());
        assert!(got.wall_ns >= before && got.wall_ns <= now_ns());
    }
}
