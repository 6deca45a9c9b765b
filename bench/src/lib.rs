//! Namespace testbed, topologies, the demo and (later) pktgen and benchmark scenarios.
//!
//! [`testbed`] builds little clusters of network namespaces (nodes and pods), runs the real
//! `sluice` engine in each node namespace and cleans everything up on success, failure and panic.

pub mod demo;
pub mod forwarding;
pub mod harness;
pub mod kube_proxy;
pub mod overlay;
pub mod pktgen;
pub mod plot;
pub mod rate;
pub mod services;
pub mod testbed;
pub mod traffic;
