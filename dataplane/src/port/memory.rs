//! In-memory port: two queues shared between the engine side ([`MemoryPort`]) and a test or
//! benchmark driver ([`MemoryPeer`]).
//!
//! The peer injects frames (optionally with offload state, as a veth with `PACKET_VNET_HDR`
//! would deliver them); the engine receives them in `rx_burst`. Whatever the engine transmits
//! is completed in software exactly as on a TAP port (checksum computed, GSO super-frame cut
//! into segments) and queued for the peer to take, so tests always see wire frames.
//!
//! The queues sit behind `Arc<Mutex<..>>`: this port is for tests and benchmarks without root,
//! not for the packet path of a real engine. It has no file descriptor to poll.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use encap::offload::{segment, Offload};

use super::{Mac, Port, TxResult};
use crate::packet::{Batch, PortId, BUF_CAP};

#[derive(Default)]
struct Queues {
    /// Frames waiting to be received by the engine, with their offload state.
    rx: VecDeque<(Vec<u8>, Offload)>,
    /// Wire frames the engine transmitted, oldest first.
    sent: Vec<Vec<u8>>,
}

/// Lock the queues, recovering them if a panicking test thread poisoned the mutex.
fn lock(q: &Mutex<Queues>) -> MutexGuard<'_, Queues> {
    q.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The engine's side of an in-memory port.
pub struct MemoryPort {
    name: String,
    mac: Mac,
    queues: Arc<Mutex<Queues>>,
    /// Scratch space for completing offloads in software (allocated once).
    scratch: Box<[u8]>,
    /// Injected frames too large for a packet buffer, not yet reported.
    drops: u64,
}

/// The driver's side of an in-memory port: inject frames, collect transmitted ones.
#[derive(Clone)]
pub struct MemoryPeer {
    queues: Arc<Mutex<Queues>>,
}

/// A connected in-memory port and its peer.
pub fn memory_port(name: &str, mac: Mac) -> (MemoryPort, MemoryPeer) {
    let queues = Arc::new(Mutex::new(Queues::default()));
    let port = MemoryPort {
        name: name.to_string(),
        mac,
        queues: Arc::clone(&queues),
        scratch: vec![0u8; BUF_CAP].into_boxed_slice(),
        drops: 0,
    };
    (port, MemoryPeer { queues })
}

impl MemoryPeer {
    /// Queue a complete frame for the engine to receive.
    pub fn inject(&self, frame: &[u8]) {
        self.inject_with(frame, Offload::default());
    }

    /// Queue a frame carrying offload state (checksum not yet computed and/or a GSO super-frame).
    pub fn inject_with(&self, frame: &[u8], offload: Offload) {
        lock(&self.queues).rx.push_back((frame.to_vec(), offload));
    }

    /// Frames injected but not yet received by the engine.
    pub fn pending(&self) -> usize {
        lock(&self.queues).rx.len()
    }

    /// Take every frame the engine has transmitted since the last call, oldest first.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut lock(&self.queues).sent)
    }
}

impl Port for MemoryPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn rx_burst(&mut self, id: PortId, batch: &mut Batch) -> io::Result<usize> {
        let mut q = lock(&self.queues);
        let mut n = 0;
        while !batch.is_full() {
            let Some((frame, offload)) = q.rx.pop_front() else {
                break;
            };
            let Some(buf) = batch.next_free() else { break };
            if !buf.fill(&frame) {
                self.drops += 1;
                continue;
            }
            buf.meta.in_port = id;
            buf.meta.offload = offload;
            batch.commit();
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, idx: &[u16]) -> TxResult {
        let mut res = TxResult::default();
        let mut q = lock(&self.queues);
        for &i in idx {
            let i = usize::from(i);
            if i >= batch.len() {
                res.dropped += 1;
                continue;
            }
            let pkt = batch.get(i);
            if pkt.meta.offload.is_plain() {
                q.sent.push(pkt.data().to_vec());
                res.sent += 1;
                continue;
            }
            let sent = &mut q.sent;
            match segment(pkt.data(), &pkt.meta.offload, &mut self.scratch, |f| {
                sent.push(f.to_vec())
            }) {
                Ok(_) => res.sent += 1,
                Err(_) => res.dropped += 1,
            }
        }
        res
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn take_device_drops(&mut self) -> u64 {
        std::mem::take(&mut self.drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Meta, MAX_FRAME};

    const MAC: Mac = [0x02, 0, 0, 0, 0, 1];

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
    }

    #[test]
    fn injected_frames_arrive_in_order_and_batch_limits_burst() {
        let (mut port, peer) = memory_port("m0", MAC);
        assert_eq!(port.name(), "m0");
        assert_eq!(port.mac(), MAC);
        assert_eq!(port.raw_fd(), None);
        for t in 0..5u8 {
            peer.inject(&frame(t, 60 + usize::from(t)));
        }
        let mut batch = Batch::new(3);
        assert_eq!(port.rx_burst(7, &mut batch).unwrap(), 3);
        assert_eq!(batch.len(), 3);
        for (t, b) in batch.iter().enumerate() {
            assert_eq!(b.data(), &frame(t as u8, 60 + t)[..]);
            assert_eq!(b.meta.in_port, 7);
            assert!(b.meta.offload.is_plain());
        }
        assert_eq!(peer.pending(), 2);
        // A full batch takes nothing more.
        assert_eq!(port.rx_burst(7, &mut batch).unwrap(), 0);
        batch.clear();
        assert_eq!(port.rx_burst(7, &mut batch).unwrap(), 2);
        assert_eq!(batch.get(0).data(), &frame(3, 63)[..]);
        assert_eq!(batch.get(1).data(), &frame(4, 64)[..]);
        batch.clear();
        assert_eq!(port.rx_burst(7, &mut batch).unwrap(), 0);
    }

    #[test]
    fn offload_state_is_carried_to_meta() {
        let (mut port, peer) = memory_port("m0", MAC);
        let o = Offload {
            needs_csum: true,
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        peer.inject_with(&frame(1, 80), o);
        let mut batch = Batch::new(4);
        assert_eq!(port.rx_burst(0, &mut batch).unwrap(), 1);
        assert_eq!(batch.get(0).meta.offload, o);
    }

    #[test]
    fn oversized_injection_is_counted_not_received() {
        let (mut port, peer) = memory_port("m0", MAC);
        peer.inject(&vec![0u8; MAX_FRAME + 1]);
        peer.inject(&frame(9, 64));
        let mut batch = Batch::new(4);
        assert_eq!(port.rx_burst(0, &mut batch).unwrap(), 1);
        assert_eq!(batch.get(0).data(), &frame(9, 64)[..]);
        assert_eq!(port.take_device_drops(), 1);
        assert_eq!(port.take_device_drops(), 0);
    }

    #[test]
    fn tx_sends_chosen_frames_and_drops_bad_indices() {
        let (mut port, peer) = memory_port("m0", MAC);
        let mut batch = Batch::new(4);
        for t in 0..3u8 {
            assert!(batch.push_copy(&frame(t, 70), Meta::default()));
        }
        let res = port.tx_burst(&batch, &[2, 0, 9]);
        assert_eq!(
            res,
            TxResult {
                sent: 2,
                dropped: 1
            }
        );
        assert_eq!(peer.take_sent(), vec![frame(2, 70), frame(0, 70)]);
        assert!(peer.take_sent().is_empty());
    }

    /// Ethernet + IPv4 + UDP with the UDP checksum field holding only the pseudo-header sum,
    /// as a sender's kernel hands it over with CHECKSUM_PARTIAL.
    fn partial_udp() -> (Vec<u8>, Offload) {
        let payload = b"hello, sluice";
        let src = [10u8, 0, 0, 1];
        let dst = [10u8, 0, 0, 2];
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let c = !fold(sum16(&ip));
        ip[10] = (c >> 8) as u8;
        ip[11] = c as u8;
        f.extend_from_slice(&ip);
        // Pseudo-header sum (not complemented) in the checksum field.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 17, (udp_len >> 8) as u8, udp_len as u8]);
        let p = fold(sum16(&pseudo));
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, (udp_len >> 8) as u8, udp_len as u8]);
        f.extend_from_slice(&[(p >> 8) as u8, p as u8]);
        f.extend_from_slice(payload);
        let o = Offload {
            needs_csum: true,
            csum_start: 34,
            csum_offset: 6,
            ..Offload::default()
        };
        (f, o)
    }

    fn sum16(b: &[u8]) -> u32 {
        b.chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .sum()
    }

    fn fold(mut s: u32) -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn tx_completes_partial_checksum() {
        let (mut port, peer) = memory_port("m0", MAC);
        let (f, o) = partial_udp();
        let mut batch = Batch::new(1);
        assert!(batch.push_copy(
            &f,
            Meta {
                offload: o,
                ..Meta::default()
            }
        ));
        assert_eq!(
            port.tx_burst(&batch, &[0]),
            TxResult {
                sent: 1,
                dropped: 0
            }
        );
        let sent = peer.take_sent();
        assert_eq!(sent.len(), 1);
        let out = &sent[0];
        assert_eq!(out.len(), f.len());
        // Everything but the UDP checksum is unchanged ...
        assert_eq!(out[..40], f[..40]);
        assert_eq!(out[42..], f[42..]);
        // ... and the UDP checksum now verifies: pseudo-header + UDP segment sums to 0xffff.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&out[26..34]);
        pseudo.extend_from_slice(&[0, 17, out[38], out[39]]);
        let total = fold(sum16(&pseudo) + sum16(&out[34..]));
        assert_eq!(
            total, 0xffff,
            "checksum field {:02x}{:02x}",
            out[40], out[41]
        );
    }
}
