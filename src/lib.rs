//! geolb: a layer-7 load balancer for GeoServer clusters.
//!
//! The request path reads top to bottom: accept ([`server`]; each connection watched by [`conn`],
//! guarded by [`framing`]) → classify ([`classify`]) → pick (over the [`cluster`] snapshot, waiting
//! for a node slot at `max_requests`) → forward ([`proxy`], over [`upstream`] connections, the
//! bodies in [`body`] and [`response`]) → record ([`record`], [`metrics`]). Health watchdogs and
//! passive failure reports feed the cluster task, which publishes new snapshots; [`admin`] shows
//! and steers them through [`control`].
// Safe code only, but for the two allocator calls of `memory` (glibc's malloc_trim).
#![deny(unsafe_code)]

pub mod admin;
pub mod body;
pub mod classify;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod consistency;
pub mod control;
pub mod error;
pub mod exception;
pub mod framing;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod response;
pub mod server;
pub mod sim;
pub mod tls;
pub mod upstream;
