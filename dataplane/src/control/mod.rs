//! The control plane: the line-delimited JSON protocol on a unix socket, its server (a `mio`
//! event loop on the controller thread, also serving Prometheus metrics over HTTP), the client
//! `sluice ctl` uses, and the [`Backend`] trait through which the dataplane is driven.

pub mod backend;
pub mod client;
pub mod proto;
pub mod server;
mod sys;

pub use backend::{Backend, BackendError, BackendErrorKind, BackendResult, MetricsSnapshot};
pub use server::{ControlError, Server, ServerOptions};
