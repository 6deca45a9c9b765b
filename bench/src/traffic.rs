//! Traffic between pods of a testbed cluster, from the test process itself: a TCP stream whose
//! every byte is checked at the receiver, UDP request/reply, and `ping`.
//!
//! The sockets are opened on threads that entered the pods' namespaces ([`Netns::run`]), so
//! the traffic really leaves one pod's kernel and arrives at the other's.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::testbed::{Netns, PodHandle};

/// The byte at `offset` of the test stream with `seed` (xorshift over 8-byte blocks): cheap,
/// position-dependent, so a lost, duplicated or reordered segment shows as a mismatch.
fn pattern_block(seed: u64, block: u64) -> [u8; 8] {
    let mut x = seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x.to_le_bytes()
}

fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        *b = pattern_block(seed, pos / 8)[(pos % 8) as usize];
    }
}

/// What a TCP transfer did.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Send `bytes` over TCP from `client` to `server_ip:port` (a listener in `server`'s namespace);
/// the receiver checks every byte against the expected pattern and answers with the count it
/// verified. Fails on connection errors, timeouts, or the first wrong byte (naming its offset).
pub fn tcp_transfer(
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    port: u16,
    bytes: u64,
    timeout: Duration,
) -> io::Result<Transfer> {
    let seed = 0x5eed ^ u64::from(port) ^ bytes;
    let listener =
        server.run(|| TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)))?;
    let receiver = std::thread::spawn(move || -> io::Result<u64> {
        listener.set_nonblocking(false)?;
        let (mut s, _) = accept_timeout(&listener, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut want = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            fill_pattern(seed, got, &mut want[..n]);
            if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("byte {} differs from what was sent", got + i as u64),
                ));
            }
            got += n as u64;
        }
        s.write_all(&got.to_be_bytes())?;
        Ok(got)
    });
    let started = Instant::now();
    let sent = client.run(|| -> io::Result<u64> {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(server_ip, port)),
            timeout,
        )?;
        s.set_write_timeout(Some(timeout))?;
        s.set_read_timeout(Some(timeout))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut off: u64 = 0;
        while off < bytes {
            let n = (bytes - off).min(buf.len() as u64) as usize;
            fill_pattern(seed, off, &mut buf[..n]);
            s.write_all(&buf[..n])?;
            off += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack)?;
        Ok(u64::from_be_bytes(ack))
    });
    let elapsed = started.elapsed();
    let received = receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))?;
    let received = received?;
    let acked = sent?;
    if received != bytes || acked != bytes {
        return Err(io::Error::other(format!(
            "sent {bytes} bytes, receiver verified {received}, acknowledged {acked}"
        )));
    }
    Ok(Transfer { bytes, elapsed })
}

fn accept_timeout(l: &TcpListener, timeout: Duration) -> io::Result<(TcpStream, SocketAddr)> {
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false)?;
                return Ok((s, a));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no connection arrived",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Send `count` UDP datagrams of `size` bytes (at least 8) from `client` to `server_ip:port`;
/// the server echoes each one back. Returns how many came back intact (each carries its
/// sequence number, checked on return). Datagrams are sent one at a time, each waiting up to
/// `wait` for its echo, so loss shows as a smaller count, not an error.
pub fn udp_echo(
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    port: u16,
    count: usize,
    size: usize,
    wait: Duration,
) -> io::Result<usize> {
    let size = size.max(8);
    let sock = server.run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    let result = client.run(|| -> io::Result<usize> {
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(SocketAddrV4::new(server_ip, port))?;
        s.set_read_timeout(Some(wait))?;
        let mut ok = 0;
        let mut buf = vec![0u8; size];
        let mut back = vec![0u8; size + 1];
        for seq in 0..count as u64 {
            fill_pattern(seq, 0, &mut buf);
            buf[..8].copy_from_slice(&seq.to_be_bytes());
            s.send(&buf)?;
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                match s.recv(&mut back) {
                    Ok(n) if n == size && back[..n] == buf[..] => {
                        ok += 1;
                        break;
                    }
                    Ok(_) => continue, // a late echo of an earlier datagram
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(ok)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = echo.join();
    result
}

/// What `ping` said.
#[derive(Debug, Clone)]
pub struct Ping {
    pub transmitted: u32,
    pub received: u32,
    /// Average round trip in milliseconds, if any reply came.
    pub avg_ms: Option<f64>,
    /// ping's whole output (ICMP errors show here: "Destination Net Unreachable").
    pub output: String,
}

/// `ping -c count` from inside `from`'s namespace.
pub fn ping(from: &Netns, dst: Ipv4Addr, count: u32, extra: &[&str]) -> io::Result<Ping> {
    let count_s = count.to_string();
    let dst_s = dst.to_string();
    let mut argv = vec!["ping", "-n", "-c", &count_s, "-i", "0.2", "-W", "2"];
    argv.extend_from_slice(extra);
    argv.push(&dst_s);
    let out = from.exec(&argv)?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut p = Ping {
        transmitted: 0,
        received: 0,
        avg_ms: None,
        output,
    };
    for line in p.output.lines() {
        if line.contains("packets transmitted") {
            let nums: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            if nums.len() >= 2 {
                p.transmitted = nums[0];
                p.received = nums[1];
            }
        }
        if let Some(rest) = line.strip_prefix("rtt min/avg/max/mdev = ") {
            p.avg_ms = rest.split('/').nth(1).and_then(|v| v.parse().ok());
        }
    }
    Ok(p)
}

/// A one-line description of a pod for people: `web-1 10.244.1.10 (eth0, afpacket)`.
pub fn describe_pod(p: &PodHandle) -> String {
    let kind = match p.kind() {
        control::config::PortKind::AfPacket => format!(
            "veth, engine reads {} with AF_PACKET",
            p.host_ifname().unwrap_or("?")
        ),
        control::config::PortKind::Tap => format!("TAP {} created by the engine", p.ifname()),
    };
    format!("{} {} ({kind})", p.name(), p.ip())
}
