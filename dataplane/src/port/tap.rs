//! TAP port: a TAP device the engine creates and owns, optionally moved into another network
//! namespace (a pod's, as Calico/VPP do), so that the device's kernel side is the pod's `eth0`.
//!
//! The device is created with `tun-tap` (`IFF_TAP | IFF_NO_PI`), its file descriptor is made
//! non-blocking, and it lives exactly as long as the [`TapPort`]: dropping the port closes the
//! descriptor and the kernel deletes the device, in whatever namespace it is by then.
//! Moving the device is one hand-written rtnetlink `RTM_NEWLINK` request carrying
//! `IFLA_NET_NS_FD`; the kernel's answer is checked and a refusal is returned as an error.
//!
//! Costs: without `IFF_VNET_HDR` a TAP moves one frame per `read`/`write` system call; that is
//! inherent to the device and the price of its simplicity (AF_PACKET's ring is the fast path).
//! Because the device has no `IFF_VNET_HDR`, the pod's kernel completes checksums and segments
//! before handing frames over, so received frames are always plain; frames the engine
//! transmits with offload state are completed in software first (`encap::offload::segment`).
//!
//! The engine's own MAC on this port (the gateway MAC the pod sees) is the one given, or a
//! locally administered unicast address derived from the device name
//! ([`super::derived_mac`]), stable across restarts.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{derived_mac, Mac, Port, TxResult};
use crate::packet::{Batch, PortId, BUF_CAP};

/// A TAP device owned by the engine.
pub struct TapPort {
    iface: tun_tap::Iface,
    name: String,
    mac: Mac,
    /// Scratch space for completing offloads in software (allocated once).
    scratch: Box<[u8]>,
}

fn with_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

pub(super) fn check_ifname(name: &str) -> io::Result<()> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TAP name {name:?} is not a valid interface name (1 to 15 bytes, no '/', spaces or NUL)"),
        ));
    }
    Ok(())
}

impl TapPort {
    /// Create the TAP device `name` in the calling thread's network namespace and, if `netns`
    /// is given, move it into that namespace: a name under `/var/run/netns/`, or a path (anything
    /// containing '/', e.g. `/proc/PID/ns/net`, as CNI runtimes pass it). The device is left down.
    pub fn create(name: &str, mac: Option<Mac>, netns: Option<&str>) -> io::Result<TapPort> {
        check_ifname(name)?;
        let iface = tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tap)
            .map_err(|e| with_context(e, format!("create TAP device {name}")))?;
        let fd = iface.as_raw_fd();
        // SAFETY: `fd` is the open descriptor owned by `iface`; F_GETFL/F_SETFL only read and
        // set its status flags and touch no memory.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        if rc < 0 {
            return Err(with_context(
                io::Error::last_os_error(),
                format!("TAP {name}: set O_NONBLOCK"),
            ));
        }
        let real = iface.name().to_string();
        if let Some(ns) = netns {
            move_to_netns(&real, ns)?;
        }
        Ok(TapPort {
            iface,
            mac: mac.unwrap_or_else(|| derived_mac(&real)),
            name: real,
            scratch: vec![0u8; BUF_CAP].into_boxed_slice(),
        })
    }
}

/// Move interface `ifname` (in the calling thread's namespace) into namespace `netns`.
fn move_to_netns(ifname: &str, netns: &str) -> io::Result<()> {
    let path = if netns.contains('/') {
        netns.to_string()
    } else {
        if netns.is_empty() || netns == "." || netns == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad network namespace name {netns:?}"),
            ));
        }
        format!("/var/run/netns/{netns}")
    };
    let ns =
        File::open(&path).map_err(|e| with_context(e, format!("open network namespace {path}")))?;
    let cname = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            format!("find interface {ifname}"),
        ));
    }
    let ifindex =
        i32::try_from(ifindex).map_err(|_| io::Error::other("interface index out of range"))?;
    rtnl_set_netns(ifindex, ns.as_raw_fd())
        .map_err(|e| with_context(e, format!("move {ifname} into network namespace {path}")))
}

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
/// rtattr header (4) + u32 fd.
const NS_FD_ATTR_LEN: usize = 8;
const MOVE_REQ_LEN: usize = NLMSG_HDR_LEN + IFINFOMSG_LEN + NS_FD_ATTR_LEN;

/// The bytes of `RTM_NEWLINK { ifi_index = ifindex, IFLA_NET_NS_FD = ns_fd }` with `NLM_F_ACK`.
fn move_request(seq: u32, ifindex: i32, ns_fd: RawFd) -> [u8; MOVE_REQ_LEN] {
    let mut m = [0u8; MOVE_REQ_LEN];
    m[0..4].copy_from_slice(&(MOVE_REQ_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: addressed to the kernel.
    // ifinfomsg: family AF_UNSPEC (0), pad, type 0, then the index; flags and change stay 0.
    m[20..24].copy_from_slice(&ifindex.to_ne_bytes());
    let a = NLMSG_HDR_LEN + IFINFOMSG_LEN;
    m[a..a + 2].copy_from_slice(&(NS_FD_ATTR_LEN as u16).to_ne_bytes());
    m[a + 2..a + 4].copy_from_slice(&libc::IFLA_NET_NS_FD.to_ne_bytes());
    m[a + 4..a + 8].copy_from_slice(&ns_fd.to_ne_bytes());
    m
}

/// Find the acknowledgement for `seq` in a netlink reply: `Some(Ok)` on success,
/// `Some(Err(errno))` on refusal, `None` if the reply holds no acknowledgement for `seq`.
fn parse_ack(reply: &[u8], seq: u32) -> Option<Result<(), i32>> {
    let mut off: usize = 0;
    while let Some(h) = reply.get(off..off.checked_add(NLMSG_HDR_LEN)?) {
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let ty = u16::from_ne_bytes([h[4], h[5]]);
        let mseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
        if len < NLMSG_HDR_LEN {
            return None;
        }
        if i32::from(ty) == libc::NLMSG_ERROR && mseq == seq {
            let e = reply.get(off + NLMSG_HDR_LEN..off.checked_add(NLMSG_HDR_LEN + 4)?)?;
            let code = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(code.saturating_neg())
            });
        }
        // Messages are 4-byte aligned.
        off = off.checked_add(len.checked_add(3)? & !3)?;
    }
    None
}

fn rtnl_set_netns(ifindex: i32, ns_fd: RawFd) -> io::Result<()> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            "open rtnetlink socket".into(),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns; OwnedFd closes it on every path.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let seq = 1;
    let req = move_request(seq, ifindex, ns_fd);
    // SAFETY: an all-zero sockaddr_nl is valid; we then set the family (pid 0 = the kernel).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` and `kernel` are valid for the lengths passed and outlive the call.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            "send RTM_NEWLINK".into(),
        ));
    }
    // rtnetlink handles the request inside sendto, so the acknowledgement is already queued:
    // read without blocking and never hang on a missing answer.
    let mut buf = [0u8; 4096];
    for _ in 0..8 {
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(with_context(e, "read rtnetlink acknowledgement".into()));
        }
        let got = buf.get(..n as usize).unwrap_or(&[]);
        match parse_ack(got, seq) {
            Some(Ok(())) => return Ok(()),
            Some(Err(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            None => continue,
        }
    }
    Err(io::Error::other("no rtnetlink acknowledgement"))
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn rx_burst(&mut self, id: PortId, batch: &mut Batch) -> io::Result<usize> {
        let mut n = 0;
        while let Some(buf) = batch.next_free() {
            match self.iface.recv(buf.rx_space()) {
                Ok(0) => break,
                Ok(len) => {
                    buf.set_len(len);
                    buf.meta.in_port = id;
                    batch.commit();
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if n == 0 => return Err(with_context(e, format!("read TAP {}", self.name))),
                // Frames already received are delivered; the error shows again on the next call.
                Err(_) => break,
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, idx: &[u16]) -> TxResult {
        let mut res = TxResult::default();
        for &i in idx {
            let i = usize::from(i);
            if i >= batch.len() {
                res.dropped += 1;
                continue;
            }
            let pkt = batch.get(i);
            let iface = &self.iface;
            let ok = super::send_completed(pkt, &mut self.scratch, |f| iface.send(f).is_ok());
            if ok {
                res.sent += 1;
            } else {
                res.dropped += 1;
            }
        }
        res
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.iface.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_touching_the_kernel() {
        for bad in ["", "a-name-of-16-byt", "a/b", "a b"] {
            let e = TapPort::create(bad, None, None).err().expect("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn move_request_layout() {
        let m = move_request(7, 42, 5);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 16); // RTM_NEWLINK
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 5); // REQUEST | ACK
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 42);
        assert_eq!(u16::from_ne_bytes(m[32..34].try_into().unwrap()), 8);
        assert_eq!(u16::from_ne_bytes(m[34..36].try_into().unwrap()), 28); // IFLA_NET_NS_FD
        assert_eq!(i32::from_ne_bytes(m[36..40].try_into().unwrap()), 5);
    }

    fn nlmsg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn ack_parsing() {
        let ok = nlmsg(2, 1, &0i32.to_ne_bytes());
        assert_eq!(parse_ack(&ok, 1), Some(Ok(())));
        let refused = nlmsg(2, 1, &(-libc::EINVAL).to_ne_bytes());
        assert_eq!(parse_ack(&refused, 1), Some(Err(libc::EINVAL)));
        // Another sequence number, then ours.
        let mut two = nlmsg(2, 9, &(-libc::EPERM).to_ne_bytes());
        two.extend_from_slice(&refused);
        assert_eq!(parse_ack(&two, 1), Some(Err(libc::EINVAL)));
        // Truncated / garbage replies are "no answer", never a panic.
        assert_eq!(parse_ack(&ok[..18], 1), None);
        assert_eq!(parse_ack(&[0xff; 3], 1), None);
        let mut zero_len = ok.clone();
        zero_len[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(parse_ack(&zero_len, 1), None);
        let mut huge = ok.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse_ack(&huge, 7), None);
    }
}
