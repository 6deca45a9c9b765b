//! sluice's control plane: the desired state of a cluster and how it becomes engine tables.
//!
//! Owns the cluster file ([`config`]: schema, validation, errors with file/line/field) and
//! the address types it is written in ([`net`]). Promises: nothing here panics on input
//! read from a file, and a value of a validated type obeys every rule of its schema.

pub mod cli;
pub mod compile;
pub mod config;
pub mod net;
