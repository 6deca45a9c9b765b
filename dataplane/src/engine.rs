//! The poll loop: one thread that owns the ports and the pipeline of a node.
//!
//! It spins over its ports while frames arrive and sleeps in epoll (mio) once no port has had
//! anything for [`SPIN`]: an idle engine costs nothing, a busy one pays no wake-up per burst.
//! Each pass: for every port, receive a burst, run the pipeline over it, transmit what it
//! decided per output port, then the frames the engine originated. Timers (ARP retries) run when
//! due. Counters are published for the admin socket after every pass that did work.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use thiserror::Error;

use crate::admin::{self, AdminState};
use crate::config::{EngineConfig, PortKind};
use crate::counters::{DropReason, Event, SharedCounters};
use crate::packet::{Batch, PortId};
use crate::pipeline::Pipeline;
use crate::port::afpacket::{AfPacketOptions, AfPacketPort};
use crate::port::tap::TapPort;
use crate::port::{Mac, Port};

/// Frames received per port per pass.
pub const BURST: usize = 64;
/// How long the loop keeps spinning after the last frame before it sleeps.
pub const SPIN: Duration = Duration::from_micros(50);
/// How often a busy engine runs [`Engine::housekeeping`].
pub const HOUSEKEEPING: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("port {port}: {source}")]
    Port { port: String, source: io::Error },
    #[error("admin socket: {0}")]
    Admin(io::Error),
    #[error("poll: {0}")]
    Poll(io::Error),
}

pub struct Engine {
    ports: Vec<Box<dyn Port>>,
    pipeline: Pipeline,
    rx: Batch,
    local: Batch,
    txq: Vec<Vec<u16>>,
    shared: Arc<SharedCounters>,
    learned_seen: u64,
    rx_failing: Vec<bool>,
    neighbours_out: Option<Arc<AdminState>>,
}

/// Frames the engine may originate per received frame (GSO segments of one super-frame,
/// fragments, ARP): the capacity of the `local` batch.
pub const LOCAL: usize = 160;

/// Open the ports a configuration names, in order, then the overlay's uplink (if any).
pub fn open_ports(cfg: &EngineConfig) -> Result<Vec<Box<dyn Port>>, EngineError> {
    // The uplink only ever receives underlay frames (MTU + Ethernet header): its V2 ring gets
    // small slots, many more of them.
    let uplink_max = cfg
        .overlay
        .as_ref()
        .map(|o| usize::from(o.mtu) + encap::ethernet::HEADER_LEN + 4);
    let n_pods = cfg.ports.len();
    cfg.ports
        .iter()
        .chain(cfg.overlay.as_ref().map(|o| &o.uplink))
        .enumerate()
        .map(|(i, p)| {
            let r: io::Result<Box<dyn Port>> = match &p.kind {
                PortKind::AfPacket { ring } => {
                    let opts = AfPacketOptions {
                        ring: *ring,
                        mac: p.mac,
                        max_frame: if i >= n_pods { uplink_max } else { None },
                        ..AfPacketOptions::default()
                    };
                    AfPacketPort::open(&p.name, &opts).map(|x| Box::new(x) as Box<dyn Port>)
                }
                PortKind::Tap { netns } => TapPort::create(&p.name, p.mac, netns.as_deref())
                    .map(|x| Box::new(x) as Box<dyn Port>),
            };
            r.map_err(|source| EngineError::Port {
                port: p.name.clone(),
                source,
            })
        })
        .collect()
}

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Engine {
    /// An engine over already opened ports (index = the port ids the routes use).
    pub fn new(cfg: &EngineConfig, ports: Vec<Box<dyn Port>>) -> Engine {
        let macs: Vec<Mac> = ports.iter().map(|p| p.mac()).collect();
        let names = ports.iter().map(|p| p.name().to_string()).collect();
        let n = ports.len();
        let mut pipeline = Pipeline::new(cfg.gateway, macs, &cfg.routes);
        if let Some(ov) = &cfg.overlay {
            // The uplink is opened after the pod ports (see `open_ports`).
            if cfg.ports.len() < n {
                pipeline.set_overlay(ov, cfg.ports.len() as PortId);
            }
        }
        Engine {
            pipeline,
            ports,
            rx: Batch::new(BURST),
            local: Batch::new(LOCAL),
            txq: vec![Vec::with_capacity(2 * BURST); n],
            shared: Arc::new(SharedCounters::new(names)),
            learned_seen: 0,
            rx_failing: vec![false; n],
            neighbours_out: None,
        }
    }

    pub fn shared(&self) -> Arc<SharedCounters> {
        self.shared.clone()
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// One pass over every port; returns the number of frames received.
    pub fn poll_once(&mut self, now: Instant) -> usize {
        let mut work = 0;
        for p in 0..self.ports.len() {
            self.rx.clear();
            let n = match self.ports[p].rx_burst(p as PortId, &mut self.rx) {
                Ok(n) => n,
                Err(e) => {
                    // Logged once per failure streak: a broken port must not flood the log.
                    if !self.rx_failing[p] {
                        self.rx_failing[p] = true;
                        tracing::warn!(port = self.ports[p].name(), error = %e, "receive failed");
                    }
                    0
                }
            };
            if n == 0 {
                continue;
            }
            if self.rx_failing[p] {
                self.rx_failing[p] = false;
                tracing::info!(port = self.ports[p].name(), "receiving again");
            }
            work += n;
            let mut start = 0;
            while start < n {
                let end = self
                    .pipeline
                    .process_from(&mut self.rx, start, &mut self.local, now);
                transmit(
                    &mut self.ports,
                    &mut self.txq,
                    &mut self.pipeline,
                    &self.rx,
                    start..end,
                );
                self.flush_local();
                start = end;
            }
        }
        if self.pipeline.next_deadline().is_some_and(|d| d <= now) {
            self.pipeline.timers(&mut self.local, now);
            self.flush_local();
        }
        work
    }

    fn flush_local(&mut self) {
        if !self.local.is_empty() {
            transmit(
                &mut self.ports,
                &mut self.txq,
                &mut self.pipeline,
                &self.local,
                0..self.local.len(),
            );
            self.local.clear();
        }
    }

    /// Copy counters to where readers see them (plain stores: cheap enough for every pass).
    pub fn publish(&mut self) {
        self.shared.publish(&self.pipeline.counters);
    }

    /// Collect what costs a syscall or an allocation (the ports' own drop counts, the neighbour
    /// table), then [`Engine::publish`]. Run at most every [`HOUSEKEEPING`] and before sleeping.
    pub fn housekeeping(&mut self) {
        for (i, port) in self.ports.iter_mut().enumerate() {
            let d = port.take_device_drops();
            if d > 0 {
                let c = &mut self.pipeline.counters;
                c.drops[DropReason::RxRing as usize] += d;
                c.ports[i].rx_dropped += d;
            }
        }
        let learned = self.pipeline.counters.event_count(Event::NeighbourLearned);
        if learned != self.learned_seen {
            self.learned_seen = learned;
            if let Some(state) = &self.neighbours_out {
                let list: Vec<_> = self
                    .pipeline
                    .neigh
                    .entries()
                    .map(|(p, ip, mac)| json!({"port": self.ports[usize::from(p)].name(), "ip": ip.to_string(), "mac": mac_str(&mac)}))
                    .collect();
                if let Ok(mut n) = state.neighbours.lock() {
                    *n = json!(list);
                }
            }
        }
        self.publish();
    }

    /// Run until `stop_fd` becomes readable (a signal was delivered to it).
    pub fn run(&mut self, stop_fd: RawFd) -> Result<(), EngineError> {
        const STOP: Token = Token(usize::MAX);
        let mut poll = Poll::new().map_err(EngineError::Poll)?;
        for (i, port) in self.ports.iter().enumerate() {
            if let Some(fd) = port.raw_fd() {
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                    .map_err(EngineError::Poll)?;
            }
        }
        poll.registry()
            .register(&mut SourceFd(&stop_fd), STOP, Interest::READABLE)
            .map_err(EngineError::Poll)?;
        let mut events = Events::with_capacity(64);
        self.shared.ready.store(true, Ordering::Release);
        let mut last_work = Instant::now();
        let mut last_housekeeping = last_work;
        loop {
            let now = Instant::now();
            if self.poll_once(now) > 0 {
                last_work = now;
                if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                    last_housekeeping = now;
                    self.housekeeping();
                } else {
                    self.publish();
                }
                continue;
            }
            if now.duration_since(last_work) < SPIN {
                // Yield rather than pause: alone on its core this returns at once, but an
                // engine sharing a core (two nodes of a test cluster, a generator) lets the
                // other run instead of burning its time slice waiting for frames.
                std::thread::yield_now();
                continue;
            }
            self.housekeeping();
            last_housekeeping = now;
            let timeout = self
                .pipeline
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EngineError::Poll(e)),
            }
            if events.iter().any(|e| e.token() == STOP) {
                return Ok(());
            }
            last_work = Instant::now();
        }
    }
}

/// Send every frame of `batch[range]` that has an output port, one burst per port.
fn transmit(
    ports: &mut [Box<dyn Port>],
    txq: &mut [Vec<u16>],
    pipeline: &mut Pipeline,
    batch: &Batch,
    range: std::ops::Range<usize>,
) {
    for q in txq.iter_mut() {
        q.clear();
    }
    for i in range {
        let pkt = batch.get(i);
        if let Some(q) = pkt.meta.out_port.and_then(|o| txq.get_mut(usize::from(o))) {
            q.push(i as u16);
        }
    }
    for (o, q) in txq.iter().enumerate() {
        if q.is_empty() {
            continue;
        }
        let res = ports[o].tx_burst(batch, q);
        let c = &mut pipeline.counters;
        let sent = res.sent.min(q.len());
        c.ports[o].tx_packets += sent as u64;
        c.ports[o].tx_bytes += q[..sent]
            .iter()
            .map(|&i| batch.get(usize::from(i)).len() as u64)
            .sum::<u64>();
        if res.dropped > 0 {
            c.drops[DropReason::TxFailed as usize] += res.dropped as u64;
            c.ports[o].tx_dropped += res.dropped as u64;
        }
    }
}

/// Run the engine of one node until SIGTERM or SIGINT: open its ports, serve its admin socket.
pub fn run_node(cfg: &EngineConfig) -> Result<(), EngineError> {
    let ports = open_ports(cfg)?;
    let mut engine = Engine::new(cfg, ports);
    let port_info: Vec<_> = cfg
        .ports
        .iter()
        .chain(cfg.overlay.as_ref().map(|o| &o.uplink))
        .zip(engine.pipeline.macs())
        .map(|(p, mac)| {
            let kind = match &p.kind {
                PortKind::AfPacket { ring } => format!("afpacket/{ring:?}").to_lowercase(),
                PortKind::Tap { .. } => "tap".to_string(),
            };
            json!({"name": p.name, "kind": kind, "mac": mac_str(mac)})
        })
        .collect();
    let routes: Vec<_> = cfg
        .routes
        .iter()
        .map(|r| {
            json!({"prefix": format!("{}/{}", r.prefix, r.len), "port": cfg.ports.get(usize::from(r.port)).map(|p| p.name.clone()),
                   "via": r.via.map(|v| v.to_string())})
        })
        .collect();
    let mut routes = routes;
    if let Some(ov) = &cfg.overlay {
        for p in &ov.peers {
            routes.push(
                json!({"prefix": format!("{}/{}", p.pod_cidr, p.pod_prefix_len),
                "port": ov.uplink.name, "via": p.underlay_ip.to_string(), "peer": p.node}),
            );
        }
    }
    let overlay = engine.pipeline.overlay_info();
    let state = Arc::new(AdminState {
        node: cfg.node.clone(),
        counters: engine.shared(),
        ports: json!(port_info),
        routes: json!({"gateway": cfg.gateway.to_string(), "routes": routes, "overlay": overlay}),
        neighbours: Mutex::new(json!([])),
    });
    engine.neighbours_out = Some(state.clone());
    let _admin = admin::serve(&cfg.admin_socket, state).map_err(EngineError::Admin)?;
    let (stop_rx, stop_tx) = UnixStream::pair().map_err(EngineError::Poll)?;
    stop_rx.set_nonblocking(true).map_err(EngineError::Poll)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let tx = stop_tx.try_clone().map_err(EngineError::Poll)?;
        signal_hook::low_level::pipe::register(sig, tx).map_err(EngineError::Poll)?;
    }
    tracing::info!(node = %cfg.node, ports = cfg.ports.len(), routes = cfg.routes.len(), admin = %cfg.admin_socket.display(), "engine ready");
    use std::os::fd::AsRawFd;
    let r = engine.run(stop_rx.as_raw_fd());
    engine.housekeeping();
    tracing::info!(node = %cfg.node, "engine stopped");
    r
}
