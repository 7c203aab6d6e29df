//! The dataplane as the controller sees it: one method per command that changes or reads it.
//!
//! The runtime implements [`Backend`]; the server owns everything protocol-shaped (parsing,
//! limits, replies, stats baselines, pipeline files) and calls these methods on the controller
//! thread only. They must return quickly: compiling a pipeline is fine (it is what the
//! controller thread is for), waiting on a worker is not beyond one batch's grace period.

use std::fmt;

use crate::control::proto::{
    Action, CaptureInfo, CaptureSpec, ErrorCode, FwStatsReply, PipelineInfo, PipelineSpec, ProtoError, ReloadReport, StageSpec, Status,
    SwapReport,
};
pub use crate::metrics::MetricsSnapshot;

/// Why the dataplane refused or failed a command. The message is lowercase and names the
/// evidence ("port `z` does not exist", "stage `dns`: tcpdump expression: syntax error").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// A named port, stage or file does not exist.
    NotFound,
    /// Invalid input the protocol could not see (a duplicate stage id, a position past the
    /// end, a filter that fails to compile or verify, a config that fails validation).
    /// Nothing changed.
    Rejected,
    /// Valid, but this dataplane cannot do it.
    Unsupported,
    /// The dataplane failed while doing it.
    Internal,
}

impl BackendError {
    pub fn not_found(message: impl Into<String>) -> BackendError {
        BackendError { kind: BackendErrorKind::NotFound, message: message.into() }
    }

    pub fn rejected(message: impl Into<String>) -> BackendError {
        BackendError { kind: BackendErrorKind::Rejected, message: message.into() }
    }

    pub fn unsupported(message: impl Into<String>) -> BackendError {
        BackendError { kind: BackendErrorKind::Unsupported, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> BackendError {
        BackendError { kind: BackendErrorKind::Internal, message: message.into() }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

impl From<BackendError> for ProtoError {
    fn from(e: BackendError) -> ProtoError {
        let code = match e.kind {
            BackendErrorKind::NotFound => ErrorCode::NotFound,
            BackendErrorKind::Rejected => ErrorCode::Rejected,
            BackendErrorKind::Unsupported => ErrorCode::Unsupported,
            BackendErrorKind::Internal => ErrorCode::Internal,
        };
        ProtoError::new(code, e.message)
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// The dataplane's side of the control protocol. Every pipeline-changing method either
/// publishes a complete new pipeline and reports it, or changes nothing and says why.
///
/// `stats` and `histogram` are served from [`Backend::metrics`] (the server keeps the reset
/// baselines), and `pipeline_replace` with a file is read by the server and arrives here as a
/// [`PipelineSpec`], so the dataplane never parses protocol input itself.
pub trait Backend: Send + Sync {
    /// Identity, ports, their default actions and pipeline generations, capture state.
    fn status(&self) -> BackendResult<Status>;

    /// Every counter and the batch-time histogram, as monotonic totals since start.
    fn metrics(&self) -> MetricsSnapshot;

    /// The pipelines of all ports, or of `port` only (`NotFound` if it does not exist).
    fn pipelines(&self, port: Option<&str>) -> BackendResult<Vec<PipelineInfo>>;

    /// Replaces `port`'s whole pipeline (and its default action, if `spec.default` is set).
    fn replace_pipeline(&self, port: &str, spec: PipelineSpec) -> BackendResult<SwapReport>;

    /// Inserts `stage` before the stage at `position` (0 = first), or last when `None`.
    fn add_stage(&self, port: &str, stage: StageSpec, position: Option<usize>) -> BackendResult<SwapReport>;

    fn remove_stage(&self, port: &str, id: &str) -> BackendResult<SwapReport>;

    /// Moves stage `id` so that it ends up at index `position` of the new list.
    fn move_stage(&self, port: &str, id: &str, position: usize) -> BackendResult<SwapReport>;

    /// Sets the port's default action (what a packet that no stage took gets).
    fn set_port_action(&self, port: &str, action: &Action) -> BackendResult<SwapReport>;

    /// Re-reads the config file the daemon was started with and applies what changed; a config
    /// that fails validation changes nothing (`Rejected`). Also what SIGHUP does.
    fn reload(&self) -> BackendResult<ReloadReport>;

    fn capture_start(&self, spec: &CaptureSpec) -> BackendResult<CaptureInfo>;

    /// Stops the running capture and reports its final counts (`NotFound` if none runs).
    fn capture_stop(&self) -> BackendResult<CaptureInfo>;

    /// The firewall's per-rule counters, merged over the kernel stages and the workers.
    fn fw_stats(&self) -> BackendResult<FwStatsReply> {
        Err(BackendError::unsupported("this dataplane has no firewall"))
    }
}
