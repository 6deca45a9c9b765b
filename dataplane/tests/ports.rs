//! Namespace tests for the AF_PACKET and TAP ports. They need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)
//! and `ip` (iproute2); without root they are skipped with a message, never silently passed.
//!
//! Each test builds its own network namespaces (`sl-t-<pid>-<n>`), deleted by an RAII guard on
//! success, failure and panic. Sockets and devices are created from a spawned thread that
//! entered the namespace with `setns(CLONE_NEWNET)`; the descriptors are then used from the
//! test thread (I/O on a descriptor does not depend on the caller's namespace). Nothing touches
//! the root namespace. Test frames carry the local experimental EtherType 0x88b5 and only those
//! are compared (IPv6 is disabled in the namespaces, so there should be no other traffic anyway).

use std::fs::File;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dataplane::packet::{Batch, GsoKind, Meta, Offload};
use dataplane::port::afpacket::{AfPacketOptions, AfPacketPort, RingKind, V2_FRAME_NR};
use dataplane::port::tap::TapPort;
use dataplane::port::{derived_mac, Mac, Port, TxResult};

const TEST_ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const PORT_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
const PEER_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];
const PORT_ID: u16 = 3;

// ---------------------------------------------------------------- namespaces

static NEXT_NS: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: namespace tests need root");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

/// A network namespace that exists as long as this guard.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> NetNs {
        let name = format!(
            "sl-t-{}-{}",
            std::process::id(),
            NEXT_NS.fetch_add(1, Ordering::Relaxed)
        );
        let out = run("ip", &["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = NetNs { name };
        ns.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// `ip -n NS ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let out = self.try_ip(args);
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn try_ip(&self, args: &[&str]) -> std::process::Output {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    fn exec(&self, args: &[&str]) {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        let out = run("ip", &a);
        assert!(
            out.status.success(),
            "ip netns exec {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `f` on a thread that lives in this namespace (sockets and devices it creates are here).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let nsf = File::open(format!("/var/run/netns/{}", self.name)).expect("open netns");
                // SAFETY: `nsf` is an open namespace file; setns only changes this thread's netns.
                let rc = unsafe { libc::setns(nsf.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            });
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// A veth pair `a`/`b` inside this namespace, both up, MTU 9000.
    fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        for dev in [a, b] {
            self.ip(&["link", "set", dev, "mtu", "9000"]);
            self.ip(&["link", "set", dev, "up"]);
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

// ---------------------------------------------------------------- a plain packet socket

/// A plain AF_PACKET socket (no ring) bound to one interface: the test's traffic peer.
struct RawSock {
    fd: OwnedFd,
    vnet: bool,
}

impl RawSock {
    fn open(ifname: &str, vnet: bool) -> RawSock {
        let cname = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert_ne!(ifindex, 0, "no interface {ifname}");
        // SAFETY: plain socket call, checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0);
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let set = |level, name, val: libc::c_int| {
            // SAFETY: live c_int, correct length.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    name,
                    (&raw const val).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
            assert_eq!(
                rc,
                0,
                "setsockopt {name}: {}",
                std::io::Error::last_os_error()
            );
        };
        if vnet {
            set(libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1);
        }
        set(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20);
        set(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20);
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: live sockaddr_ll, correct length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        RawSock { fd, vnet }
    }

    fn send(&self, frame: &[u8]) {
        if self.vnet {
            self.send_vnet([0; 10], frame);
        } else {
            // SAFETY: live slice.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(
                n,
                frame.len() as isize,
                "send: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    fn send_vnet(&self, hdr: [u8; 10], frame: &[u8]) {
        assert!(self.vnet);
        let mut m = hdr.to_vec();
        m.extend_from_slice(frame);
        // SAFETY: live vector.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        assert_eq!(
            n,
            m.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The next test frame (EtherType 0x88b5 or IPv4 to PEER_MAC), with its vnet header if any.
    fn recv(&self, timeout: Duration) -> Option<([u8; 10], Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70_000];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if rc <= 0 {
                return None;
            }
            // SAFETY: live buffer of the given length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                continue;
            }
            let got = &buf[..n as usize];
            let (hdr, frame) = if self.vnet {
                (got[..10].try_into().unwrap(), &got[10..])
            } else {
                ([0; 10], got)
            };
            if is_test_frame(frame) {
                return Some((hdr, frame.to_vec()));
            }
        }
    }
}

fn is_test_frame(f: &[u8]) -> bool {
    f.len() >= 14
        && (f[12..14] == TEST_ETHERTYPE || (f[12..14] == [0x08, 0x00] && f[..6] == PEER_MAC[..]))
}

// ---------------------------------------------------------------- frames

/// A test frame of `len` bytes (>= 20) numbered `seq`.
fn test_frame(dst: Mac, src: Mac, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32).wrapping_mul(7).wrapping_add(seq) as u8);
    }
    f
}

fn sizes(n: usize) -> Vec<usize> {
    let base = [60, 64, 128, 333, 1000, 1514, 9014];
    (0..n)
        .map(|i| base[i % base.len()] + (i % 3))
        .map(|l| l.min(9014))
        .collect()
}

/// Receive test frames from `port` until `want` arrived or `timeout` passed.
fn port_rx(
    port: &mut dyn Port,
    want: usize,
    cap: usize,
    timeout: Duration,
) -> Vec<(Vec<u8>, Meta)> {
    let mut batch = Batch::new(cap);
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        batch.clear();
        let n = port.rx_burst(PORT_ID, &mut batch).expect("rx_burst");
        assert_eq!(n, batch.len());
        for b in batch.iter() {
            if is_test_frame(b.data()) {
                got.push((b.data().to_vec(), b.meta));
            }
        }
        if n == 0 {
            let fd = port.raw_fd().expect("fd");
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, 5) };
        }
    }
    got
}

fn batch_of(frames: &[Vec<u8>], offload: Offload) -> Batch {
    let mut b = Batch::new(frames.len());
    for f in frames {
        assert!(b.push_copy(
            f,
            Meta {
                offload,
                ..Meta::default()
            }
        ));
    }
    b
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0)))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// IPv4 header and transport (TCP/UDP) checksums of an Ethernet frame both verify.
fn ipv4_checksums_ok(f: &[u8]) -> bool {
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if fold(sum16(&ip[..ihl])) != 0xffff || total != ip.len() {
        return false;
    }
    let l4 = &ip[ihl..total];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    fold(sum16(&pseudo) + sum16(l4)) == 0xffff
}

/// Ethernet + IPv4 + TCP with `payload` bytes, checksum field = pseudo-header sum (partial),
/// as a sender's kernel hands over a TSO super-frame.
fn tcp_super_frame(payload: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PORT_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 20 + payload;
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
        64,
        6,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ];
    let c = !fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 6];
    pseudo.extend_from_slice(&((20 + payload) as u16).to_be_bytes());
    let p = fold(sum16(&pseudo));
    // ports 40000 -> 80, seq 1000, ack 1, data offset 5, ACK|PSH, window 65535
    f.extend_from_slice(&[
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff,
    ]);
    f.extend_from_slice(&p.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload).map(|i| (i * 13 % 251) as u8));
    f
}

fn tso_offload(mss: u16) -> Offload {
    Offload {
        needs_csum: true,
        csum_start: 34,
        csum_offset: 16,
        gso: GsoKind::TcpV4,
        gso_size: mss,
        hdr_len: 54,
        data_valid: false,
    }
}

// ---------------------------------------------------------------- AF_PACKET

fn afpacket_exchange(kind: RingKind) {
    let ns = NetNs::new();
    ns.veth("va", "vb");
    ns.ip(&["link", "set", "va", "address", "02:00:00:00:00:0a"]);
    let opts = AfPacketOptions {
        ring: kind,
        ..AfPacketOptions::default()
    };
    let mut port = ns
        .enter(|| AfPacketPort::open("va", &opts))
        .expect("open va");
    assert_eq!(port.name(), "va");
    assert_eq!(port.mac(), PORT_MAC, "SIOCGIFHWADDR");
    let peer = ns.enter(|| RawSock::open("vb", false));

    // Peer -> port: 100 frames of varied sizes, up to a 9000-byte MTU jumbo frame.
    let frames: Vec<Vec<u8>> = sizes(100)
        .iter()
        .enumerate()
        .map(|(i, &l)| test_frame(PORT_MAC, PEER_MAC, i as u32, l))
        .collect();
    for f in &frames {
        peer.send(f);
    }
    // Small batches: the V3 reader must resume inside a partly consumed block.
    std::thread::sleep(Duration::from_millis(20));
    let got = port_rx(&mut port, frames.len(), 7, Duration::from_secs(5));
    assert_eq!(got.len(), frames.len(), "frames received");
    for (i, ((g, meta), f)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g, f, "frame {i} bytes");
        assert_eq!(meta.in_port, PORT_ID);
        assert!(meta.offload.is_plain(), "frame {i}: {:?}", meta.offload);
    }

    // Port -> peer: a burst of 100 (more than one sendmmsg chunk), byte-exact and in order.
    let out: Vec<Vec<u8>> = sizes(100)
        .iter()
        .enumerate()
        .map(|(i, &l)| test_frame(PEER_MAC, PORT_MAC, 1000 + i as u32, l))
        .collect();
    let batch = batch_of(&out, Offload::default());
    let idx: Vec<u16> = (0..out.len() as u16).collect();
    assert_eq!(
        port.tx_burst(&batch, &idx),
        TxResult {
            sent: 100,
            dropped: 0
        }
    );
    for (i, f) in out.iter().enumerate() {
        let (_, g) = peer
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("peer missed frame {i}"));
        assert_eq!(&g, f, "tx frame {i}");
    }
    assert!(
        peer.recv(Duration::from_millis(50)).is_none(),
        "no extra frames"
    );

    // The port never reads back what it sent. (The kernel never loops a packet socket's
    // frames back to that same socket; PACKET_IGNORE_OUTGOING is what hides the frames other
    // senders transmit on the interface: another socket of the engine, the node's kernel.)
    let echo = port_rx(&mut port, 1, 16, Duration::from_millis(100));
    assert!(
        echo.is_empty(),
        "port received {} of its own frames",
        echo.len()
    );
    let other = ns.enter(|| RawSock::open("va", false));
    for i in 0..10 {
        other.send(&test_frame(PEER_MAC, PORT_MAC, 2000 + i, 100));
    }
    for i in 0..10 {
        let (_, g) = peer
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("peer missed outgoing frame {i}"));
        assert_eq!(g, test_frame(PEER_MAC, PORT_MAC, 2000 + i, 100));
    }
    let echo = port_rx(&mut port, 1, 16, Duration::from_millis(100));
    assert!(
        echo.is_empty(),
        "port received {} outgoing frames (PACKET_IGNORE_OUTGOING)",
        echo.len()
    );
    assert_eq!(port.take_device_drops(), 0);

    // An index outside the batch is a counted drop, not a panic.
    assert_eq!(
        port.tx_burst(&batch, &[0, 500]),
        TxResult {
            sent: 1,
            dropped: 1
        }
    );
    assert!(peer.recv(Duration::from_secs(2)).is_some());
}

#[test]
fn afpacket_v2_exchanges_frames_exactly() {
    require_root!();
    afpacket_exchange(RingKind::V2);
}

#[test]
fn afpacket_v3_exchanges_frames_exactly() {
    require_root!();
    afpacket_exchange(RingKind::V3);
}

#[test]
fn afpacket_v2_counts_ring_drops_and_honours_mac_option() {
    require_root!();
    let ns = NetNs::new();
    ns.veth("va", "vb");
    let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    let opts = AfPacketOptions {
        ring: RingKind::V2,
        vnet_hdr: false,
        mac: Some(mac),
        max_frame: None,
    };
    let mut port = ns
        .enter(|| AfPacketPort::open("va", &opts))
        .expect("open va");
    assert_eq!(port.mac(), mac);
    let peer = ns.enter(|| RawSock::open("vb", false));
    // More frames than the ring has slots, while nobody reads: the kernel drops the excess.
    let n = 400;
    for i in 0..n {
        peer.send(&test_frame(mac, PEER_MAC, i, 100));
    }
    std::thread::sleep(Duration::from_millis(100));
    let got = port_rx(&mut port, n as usize, 64, Duration::from_millis(500));
    let drops = port.take_device_drops();
    assert_eq!(got.len(), V2_FRAME_NR as usize, "a full ring");
    assert_eq!(
        got.len() as u64 + drops,
        u64::from(n),
        "every frame received or counted"
    );
    // The first frames are the ones kept, in order.
    for (i, (g, _)) in got.iter().enumerate() {
        assert_eq!(g, &test_frame(mac, PEER_MAC, i as u32, 100));
    }
    assert_eq!(
        port.take_device_drops(),
        0,
        "PACKET_STATISTICS resets on read"
    );
    // The ring is usable again.
    peer.send(&test_frame(mac, PEER_MAC, 9999, 100));
    let got = port_rx(&mut port, 1, 8, Duration::from_secs(2));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, test_frame(mac, PEER_MAC, 9999, 100));
}

fn afpacket_offloads(kind: RingKind) {
    let ns = NetNs::new();
    ns.veth("va", "vb");
    let opts = AfPacketOptions {
        ring: kind,
        ..AfPacketOptions::default()
    };
    let mut port = ns
        .enter(|| AfPacketPort::open("va", &opts))
        .expect("open va");
    let peer = ns.enter(|| RawSock::open("vb", true));

    // The peer hands a 3000-byte TCP super-frame with a partial checksum to the kernel, as a
    // pod's TCP stack does; it must reach the engine whole, described by its vnet header.
    let sf = tcp_super_frame(3000);
    let mut hdr = [0u8; 10];
    hdr[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    hdr[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
    hdr[2..4].copy_from_slice(&54u16.to_le_bytes());
    hdr[4..6].copy_from_slice(&1000u16.to_le_bytes());
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    // Make the frame addressed to the port's interface (its real MAC).
    let mut sf_in = sf.clone();
    sf_in[..6].copy_from_slice(&port.mac());
    sf_in[6..12].copy_from_slice(&PEER_MAC);
    sf_in[12..14].copy_from_slice(&[0x08, 0x00]);
    peer.send_vnet(hdr, &sf_in);
    let got = port_rx_ipv4(&mut port, Duration::from_secs(5));
    let (g, meta) = got.expect("super-frame received");
    assert_eq!(g, sf_in, "super-frame bytes");
    let o = meta.offload;
    assert_eq!(o.gso, GsoKind::TcpV4, "{o:?}");
    assert_eq!(o.gso_size, 1000, "{o:?}");
    assert!(o.needs_csum, "{o:?}");
    assert_eq!((o.csum_start, o.csum_offset), (34, 16), "{o:?}");

    // And back out whole: the peer's kernel describes it with the same header.
    let batch = batch_of(std::slice::from_ref(&sf), tso_offload(1000));
    assert_eq!(
        port.tx_burst(&batch, &[0]),
        TxResult {
            sent: 1,
            dropped: 0
        }
    );
    let (h, g) = peer
        .recv(Duration::from_secs(5))
        .expect("peer got the super-frame");
    assert_eq!(g, sf);
    assert_eq!(h[0] & 1, 1, "NEEDS_CSUM: {h:?}");
    assert_eq!(h[1], 1, "GSO_TCPV4: {h:?}");
    assert_eq!(u16::from_le_bytes([h[4], h[5]]), 1000, "gso_size: {h:?}");
    assert_eq!(u16::from_le_bytes([h[6], h[7]]), 34, "csum_start: {h:?}");
    assert_eq!(u16::from_le_bytes([h[8], h[9]]), 16, "csum_offset: {h:?}");
}

/// The next IPv4 frame the port receives (the super-frame test uses a real TCP/IPv4 frame).
fn port_rx_ipv4(port: &mut AfPacketPort, timeout: Duration) -> Option<(Vec<u8>, Meta)> {
    let mut batch = Batch::new(4);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        batch.clear();
        port.rx_burst(PORT_ID, &mut batch).expect("rx_burst");
        if let Some(b) = batch
            .iter()
            .find(|b| b.data().len() > 14 && b.data()[12..14] == [0x08, 0x00])
        {
            return Some((b.data().to_vec(), b.meta));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn afpacket_v2_keeps_offloads_through_vnet_headers() {
    require_root!();
    afpacket_offloads(RingKind::V2);
}

#[test]
fn afpacket_v3_keeps_offloads_through_vnet_headers() {
    require_root!();
    afpacket_offloads(RingKind::V3);
}

#[test]
fn afpacket_without_vnet_hdr_completes_offloads_in_software() {
    require_root!();
    let ns = NetNs::new();
    ns.veth("va", "vb");
    let opts = AfPacketOptions {
        vnet_hdr: false,
        ..AfPacketOptions::default()
    };
    let mut port = ns
        .enter(|| AfPacketPort::open("va", &opts))
        .expect("open va");
    let peer = ns.enter(|| RawSock::open("vb", false));
    let batch = batch_of(&[tcp_super_frame(3000)], tso_offload(1000));
    assert_eq!(
        port.tx_burst(&batch, &[0]),
        TxResult {
            sent: 1,
            dropped: 0
        }
    );
    check_segments(&peer, &tcp_super_frame(3000), 1000);
}

/// The peer receives `sf` cut into `mss`-byte TCP segments with valid checksums.
fn check_segments(peer: &RawSock, sf: &[u8], mss: usize) {
    let payload = &sf[54..];
    let nseg = payload.len().div_ceil(mss);
    let mut joined = Vec::new();
    for i in 0..nseg {
        let (_, g) = peer
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("segment {i} missing"));
        let want_len = 54 + mss.min(payload.len() - i * mss);
        assert_eq!(g.len(), want_len, "segment {i} length");
        assert_eq!(g[..14], sf[..14], "segment {i} Ethernet header");
        assert!(ipv4_checksums_ok(&g), "segment {i} checksums");
        let seq = u32::from_be_bytes([g[38], g[39], g[40], g[41]]);
        assert_eq!(seq, 1000 + (i * mss) as u32, "segment {i} sequence number");
        joined.extend_from_slice(&g[54..]);
    }
    assert_eq!(joined, payload, "payload reassembles");
    assert!(
        peer.recv(Duration::from_millis(50)).is_none(),
        "no extra segments"
    );
}

// ---------------------------------------------------------------- TAP

#[test]
fn tap_moves_into_namespace_and_exchanges_frames() {
    require_root!();
    let home = NetNs::new();
    let pod = NetNs::new();
    let mut port = home
        .enter(|| TapPort::create("sltap0", None, Some(&pod.name)))
        .expect("create tap");
    assert_eq!(port.name(), "sltap0");
    assert_eq!(port.mac(), derived_mac("sltap0"));
    assert!(port.raw_fd().is_some());
    // The device is in the pod's namespace now, not in the one it was created in.
    assert!(
        pod.try_ip(&["link", "show", "sltap0"]).status.success(),
        "device in the target namespace"
    );
    assert!(
        !home.try_ip(&["link", "show", "sltap0"]).status.success(),
        "device left its first namespace"
    );
    pod.ip(&["link", "set", "sltap0", "address", "02:00:00:00:00:0b"]);
    pod.ip(&["link", "set", "sltap0", "up"]);
    let peer = pod.enter(|| RawSock::open("sltap0", false));

    // Pod -> engine.
    let frames: Vec<Vec<u8>> = (0..50)
        .map(|i| test_frame(port.mac(), PEER_MAC, i, 60 + (i as usize * 29) % 1455))
        .collect();
    for f in &frames {
        peer.send(f);
    }
    let got = port_rx(&mut port, frames.len(), 8, Duration::from_secs(5));
    assert_eq!(got.len(), frames.len());
    for (i, ((g, meta), f)) in got.iter().zip(&frames).enumerate() {
        assert_eq!(g, f, "frame {i}");
        assert_eq!(meta.in_port, PORT_ID);
        assert!(meta.offload.is_plain());
    }

    // Engine -> pod.
    let out: Vec<Vec<u8>> = (0..100)
        .map(|i| test_frame(PEER_MAC, port.mac(), 500 + i, 60 + (i as usize * 37) % 1455))
        .collect();
    let batch = batch_of(&out, Offload::default());
    let idx: Vec<u16> = (0..out.len() as u16).collect();
    assert_eq!(
        port.tx_burst(&batch, &idx),
        TxResult {
            sent: 100,
            dropped: 0
        }
    );
    for (i, f) in out.iter().enumerate() {
        let (_, g) = peer
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("pod missed frame {i}"));
        assert_eq!(&g, f, "tx frame {i}");
    }
    assert!(
        peer.recv(Duration::from_millis(50)).is_none(),
        "no extra frames"
    );

    // A super-frame the engine transmits reaches the pod as wire-ready segments.
    let sf = tcp_super_frame(3000);
    let batch = batch_of(std::slice::from_ref(&sf), tso_offload(1000));
    assert_eq!(
        port.tx_burst(&batch, &[0]),
        TxResult {
            sent: 1,
            dropped: 0
        }
    );
    check_segments(&peer, &sf, 1000);

    // Dropping the port deletes the device.
    drop(port);
    assert!(
        !pod.try_ip(&["link", "show", "sltap0"]).status.success(),
        "device gone with its port"
    );
}

#[test]
fn tap_reports_namespace_errors() {
    require_root!();
    let home = NetNs::new();
    let missing = format!("sl-t-{}-missing", std::process::id());
    let e = home
        .enter(|| TapPort::create("sltap1", Some(PORT_MAC), Some(&missing)))
        .err()
        .expect("no such namespace");
    assert!(
        e.to_string().contains(&format!("/var/run/netns/{missing}")),
        "{e}"
    );
    // Not a network namespace: the kernel refuses the move and the ACK carries the error.
    let e = home
        .enter(|| TapPort::create("sltap2", None, Some("/proc/self/ns/uts")))
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("move sltap2 into network namespace /proc/self/ns/uts"),
        "{msg}"
    );
    assert!(msg.contains("Invalid argument"), "{msg}");
    // Failed creations leave no device behind.
    assert!(!home.try_ip(&["link", "show", "sltap1"]).status.success());
    assert!(!home.try_ip(&["link", "show", "sltap2"]).status.success());
    // Without a namespace the device stays where it was created, with the given MAC as the engine's.
    let port = home
        .enter(|| TapPort::create("sltap3", Some(PORT_MAC), None))
        .expect("create");
    assert_eq!(port.mac(), PORT_MAC);
    assert!(home.try_ip(&["link", "show", "sltap3"]).status.success());
}
