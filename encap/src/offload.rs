//! Checksum and segmentation offload state (`virtio_net_hdr` semantics).
//! (completion functions being written)

/// Segmentation offload kinds, as in `virtio_net_hdr.gso_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GsoKind {
    #[default]
    None,
    TcpV4,
    TcpV6,
    UdpL4,
}

/// Checksum and segmentation state of a frame, with the semantics of `virtio_net_hdr`.
///
/// A frame read from a veth with `PACKET_VNET_HDR` may carry a transport checksum that is not
/// yet computed (`needs_csum`: the 16-bit field at `csum_start + csum_offset` holds only the
/// pseudo-header sum) and may be a TCP "super-frame" of up to 64 KiB to be cut into
/// `gso_size`-byte segments. A port that cannot hand such a frame on as it is (TAP, pcap,
/// memory) completes it in software before transmitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// The transport checksum must still be computed (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    pub needs_csum: bool,
    /// The checksum was verified by the sender's side (VIRTIO_NET_HDR_F_DATA_VALID).
    pub data_valid: bool,
    /// Offset from the start of the frame where checksumming starts.
    pub csum_start: u16,
    /// Offset from `csum_start` of the 16-bit checksum field.
    pub csum_offset: u16,
    pub gso: GsoKind,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Length of all headers (Ethernet to transport) in front of the payload.
    pub hdr_len: u16,
}

impl Offload {
    /// True when the frame is complete as it is: nothing left to compute or segment.
    pub fn is_plain(&self) -> bool {
        !self.needs_csum && self.gso == GsoKind::None
    }
}
