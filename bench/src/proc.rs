//! What the kernel accounts for a process: CPU time (`/proc/PID/stat`),
//! memory (`status`), and datagrams its UDP sockets dropped (`fd`, `net/udp`);
//! and the machine's busy time (`/proc/stat`), to see who else was running.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

/// User plus system CPU time of all threads of `pid`.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    ticks(parse_stat_ticks(&stat).ok_or_else(|| malformed("stat"))?)
}

/// CPU time all cores spent busy (neither idle nor waiting for IO).
pub fn machine_busy() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    ticks(parse_machine_busy(&stat).ok_or_else(|| malformed("stat"))?)
}

fn ticks(n: u64) -> io::Result<Duration> {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Duration::from_secs_f64(n as f64 / per_second as f64))
}

/// Resident set size of `pid`, in bytes.
pub fn rss(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_rss(&status).ok_or_else(|| malformed("status"))
}

/// Datagrams the kernel dropped because a receive buffer was full, summed
/// over the UDP sockets `pid` holds open: loss that happened before the
/// process read anything, told apart by whose socket it was.
pub fn udp_drops(pid: u32) -> io::Result<u64> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        // A descriptor closed since the listing has no link: skip it.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let inode: Option<u64> = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
        inodes.extend(inode);
    }
    let mut drops = 0;
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        drops += parse_udp_drops(&text, &inodes);
    }
    Ok(drops)
}

fn malformed(file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected /proc {file} format"),
    )
}

/// utime + stime, in clock ticks. Fields 14 and 15 of `stat`; the command
/// name (field 2) may hold spaces and parentheses, so count from the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The `cpu` line: user nice system idle iowait irq softirq steal ...
fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let idle = fields.get(3)? + fields.get(4)?;
    // guest time is already counted in user.
    let total: u64 = fields.iter().take(8).sum();
    Some(total - idle)
}

fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Rows of `/proc/net/udp`: sl, local, remote, st, queues, timer,
/// retransmits, uid, timeout, inode, ref, pointer, drops.
fn parse_udp_drops(table: &str, inodes: &HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let drops: u64 = fields.get(12)?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1523 0 0 0 \
                    731 229 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(731 + 229));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 1000 50 0 4 6 0 0\ncpu0 50 10 15 500 25 0 2 3 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(100 + 20 + 30 + 4 + 6));
        assert_eq!(parse_machine_busy("intr 1 2 3\n"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tvigil\nVmPeak:\t  9000 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss(status), Some(51200 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn udp_drops_are_summed_over_the_given_sockets() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 1: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5001 2 0000000000000000 7\n\
            \x20 2: 0100007F:9C42 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5002 2 0000000000000000 30\n\
            \x20 3: 0100007F:9C43 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5003 2 0000000000000000 100\n";
        let ours: HashSet<u64> = [5001, 5003].into();
        assert_eq!(parse_udp_drops(table, &ours), 107);
        assert_eq!(parse_udp_drops(table, &HashSet::new()), 0);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(rss(me).unwrap() > 0);
        cpu_time(me).unwrap();
        assert!(machine_busy().unwrap() > Duration::ZERO);
        let _socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_drops(me).unwrap(), 0);
    }
}
