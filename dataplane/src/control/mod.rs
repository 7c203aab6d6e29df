//! The control plane: the line-delimited JSON protocol on a unix socket, its server (a `mio`
//! event loop on the controller thread, also serving Prometheus metrics over HTTP), the client
//! `sluice ctl` uses, and the [`Backend`] trait through which the dataplane is driven.

pub mod backend;
pub mod proto;

pub use backend::{Backend, BackendError, BackendErrorKind, BackendResult, MetricsSnapshot};
