//! The sluice engine.
//!
//! Owns the packet path of one node: ports ([`port`]), the poll loop ([`engine`]), the
//! pipeline that classifies, answers and routes each frame ([`pipeline`]), the routing and
//! neighbour tables ([`route`], [`neigh`]), the overlay to other nodes ([`overlay`]),
//! connection tracking ([`conntrack`]) and endpoint choice for services ([`lb`]; these two are
//! not wired into the pipeline yet), counters with named drop reasons ([`counters`]) and the
//! admin socket ([`admin`]). The engine is configured with an [`config::EngineConfig`]
//! computed by the control plane; it holds no global mutable state, so several engines (or
//! workers) can live in one process.

pub mod admin;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod engine;
pub mod lb;
pub mod neigh;
pub mod overlay;
pub mod packet;
pub mod pipeline;
pub mod port;
pub mod route;
