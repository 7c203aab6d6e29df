//! The control protocol's [`Backend`], served by a [`RuntimeHandle`]: translation between the
//! protocol's types and the pipeline's, and error classes. No logic of its own beyond that.

use std::path::PathBuf;
use std::time::Duration;

use crate::control::proto::{
    Action, CaptureInfo, CaptureSpec, FilterFormat, FirewallStatus, FwStatsReply, PipelineInfo, PipelineSpec as ProtoPipeline, PortStatus, ReloadReport,
    StageInfo, StageSpec as ProtoStage, Status, SwapReport,
};
use crate::control::{Backend, BackendError, BackendErrorKind, BackendResult, MetricsSnapshot};
use crate::metrics::{FwRuleEntry, QueueEntry, SteerEntry, SteerEntryCounters, StageEntry};
use crate::pipeline::spec::check_id;
use crate::pipeline::{ActionSpec, DefaultAction, FilterSpec, PipelineSpec, StageSpec};
use crate::bpf::source::Format;

use super::firewall::{FirewallError, FwRuleTotals};
use super::capture::{CaptureError, CaptureReport, CaptureRequest};
use super::handle::{ControlError, RuntimeHandle, SwapOutcome};

/// How long `metrics` waits for busy workers' histograms; sleeping workers' samples come
/// with a later call.
const HIST_WAIT: Duration = Duration::from_millis(5);
/// Default stored bytes per captured packet.
const DEFAULT_SNAPLEN: u32 = 65535;

impl From<ControlError> for BackendError {
    fn from(e: ControlError) -> BackendError {
        let kind = match &e {
            ControlError::NoPort(_) | ControlError::NoStage { .. } => BackendErrorKind::NotFound,
            ControlError::Position { .. } | ControlError::Rejected { .. } | ControlError::Config(_) | ControlError::Layout(_) => {
                BackendErrorKind::Rejected
            }
            ControlError::NoConfigFile => BackendErrorKind::Unsupported,
            ControlError::Firewall(FirewallError::Kernel(_)) => BackendErrorKind::Internal,
            ControlError::Firewall(_) => BackendErrorKind::Rejected,
        };
        BackendError { kind, message: e.to_string() }
    }
}

impl From<CaptureError> for BackendError {
    fn from(e: CaptureError) -> BackendError {
        let kind = match &e {
            CaptureError::NotRunning => BackendErrorKind::NotFound,
            CaptureError::Running(_) | CaptureError::Create(_) | CaptureError::Filter(_) => BackendErrorKind::Rejected,
            CaptureError::Write(_) | CaptureError::Spawn(_) | CaptureError::Panicked => BackendErrorKind::Internal,
        };
        BackendError { kind, message: e.to_string() }
    }
}

fn to_proto_action(a: &ActionSpec) -> Action {
    match a {
        ActionSpec::Drop => Action::Drop,
        ActionSpec::Reflect => Action::Reflect,
        ActionSpec::Forward(to) => Action::Forward(to.clone()),
        ActionSpec::Count => Action::Count,
        ActionSpec::Sample => Action::Sample,
        ActionSpec::Continue => Action::Continue,
        ActionSpec::Verdict => Action::Verdict,
    }
}

fn from_proto_action(a: &Action) -> ActionSpec {
    match a {
        Action::Drop => ActionSpec::Drop,
        Action::Reflect => ActionSpec::Reflect,
        Action::Forward(to) => ActionSpec::Forward(to.clone()),
        Action::Count => ActionSpec::Count,
        Action::Sample => ActionSpec::Sample,
        Action::Continue => ActionSpec::Continue,
        Action::Verdict => ActionSpec::Verdict,
    }
}

fn default_action(a: &Action) -> BackendResult<DefaultAction> {
    match from_proto_action(a) {
        ActionSpec::Drop => Ok(DefaultAction::Drop),
        ActionSpec::Reflect => Ok(DefaultAction::Reflect),
        ActionSpec::Forward(to) => Ok(DefaultAction::Forward(to)),
        other => Err(BackendError::rejected(format!("`{}` cannot be a port's action (expected drop, reflect or forward:PORT)", other.name()))),
    }
}

fn to_proto_stage(s: &StageSpec) -> ProtoStage {
    let (filter, format) = match &s.filter {
        FilterSpec::Text { text, format } => (
            text.clone(),
            match format {
                Format::Tcpdump => FilterFormat::Tcpdump,
                Format::Classic => FilterFormat::Classic,
                Format::Hex => FilterFormat::Hex,
                Format::Asm => FilterFormat::Asm,
                // Inline raw bytecode and objects are refused by the spec; a file carries them.
                Format::Bytes | Format::Object => FilterFormat::File,
            },
        ),
        FilterSpec::File { path, .. } => (path.display().to_string(), FilterFormat::File),
    };
    ProtoStage { id: s.id.clone(), filter, format, section: None, action: to_proto_action(&s.action) }
}

fn from_proto_stage(s: &ProtoStage) -> BackendResult<StageSpec> {
    check_id(&s.id).map_err(|e| BackendError::rejected(format!("stage `{}`: {e}", s.id)))?;
    if s.section.is_some() {
        return Err(BackendError::unsupported(format!(
            "stage `{}`: eBPF object sections are not loadable yet; give the program as bytecode or assembler text",
            s.id
        )));
    }
    let filter = match s.format {
        FilterFormat::Tcpdump => FilterSpec::Text { text: s.filter.clone(), format: Format::Tcpdump },
        FilterFormat::Classic => FilterSpec::Text { text: s.filter.clone(), format: Format::Classic },
        FilterFormat::Hex => FilterSpec::Text { text: s.filter.clone(), format: Format::Hex },
        FilterFormat::Asm => FilterSpec::Text { text: s.filter.clone(), format: Format::Asm },
        FilterFormat::File => FilterSpec::File { path: PathBuf::from(&s.filter), format: None },
    };
    Ok(StageSpec { id: s.id.clone(), filter, action: from_proto_action(&s.action) })
}

fn report(handle: &RuntimeHandle, port: usize, out: SwapOutcome) -> SwapReport {
    SwapReport {
        port: handle.ports()[port].name.clone(),
        generation: out.generation,
        stages: out.stages,
        compile_us: out.compile.as_micros() as u64,
    }
}

fn capture_info(handle: &RuntimeHandle, r: CaptureReport) -> CaptureInfo {
    CaptureInfo {
        path: r.request.path,
        port: r.request.port.map(|p| handle.ports()[p].name.clone()),
        filter: r.request.filter,
        packets: r.packets,
        dropped: r.dropped,
        running: r.running,
    }
}

impl RuntimeHandle {
    fn checked_edit(&self, port: &str, edit: impl FnOnce(&mut PipelineSpec) -> Result<(), ControlError>) -> BackendResult<SwapReport> {
        let p = self.port_index(port)?;
        let out = self.edit(p, edit)?;
        Ok(report(self, p, out))
    }
}

impl Backend for RuntimeHandle {
    fn status(&self) -> BackendResult<Status> {
        let ports = self
            .ports()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let pipeline = self.pipeline(i);
                PortStatus {
                    name: p.name.clone(),
                    interface: p.interface.clone(),
                    queues: p.queues.clone(),
                    action: to_proto_action(&pipeline.spec().default.as_action()),
                    stages: pipeline.stages().len(),
                    generation: self.generation(i),
                }
            })
            .collect();
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.uptime().as_secs_f64(),
            config: self.config_path().map(PathBuf::from).unwrap_or_default(),
            workers: self.workers(),
            swaps: self.swaps(),
            ports,
            capture: self.captures().current().map(|r| capture_info(self, r)),
            firewall: self.firewall_summary().map(|f| FirewallStatus { file: f.file, rules: f.rules, kernel_rules: f.kernel_rules }),
        })
    }

    fn metrics(&self) -> MetricsSnapshot {
        let ports = self.ports();
        let queues = self
            .queue_stats()
            .into_iter()
            .map(|(p, queue, counters)| QueueEntry { port: ports[p].name.clone(), interface: ports[p].interface.clone(), queue, counters })
            .collect();
        let mut stages = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            for (id, t) in self.stage_totals(i) {
                if let Some(id) = id {
                    stages.push(StageEntry { port: p.name.clone(), id, packets: t.packets, bytes: t.bytes });
                }
            }
        }
        let steering = self
            .steering_counters()
            .into_iter()
            .map(|(interface, c)| SteerEntry {
                interface,
                counters: SteerEntryCounters { seen: c.seen, redirected: c.redirected, passed: c.passed, dropped: c.dropped },
            })
            .collect();
        let firewall = fw_entries(self.firewall_totals().1);
        MetricsSnapshot { queues, stages, steering, firewall, swaps: self.swaps(), batch_ns: self.histogram(HIST_WAIT) }
    }

    fn pipelines(&self, port: Option<&str>) -> BackendResult<Vec<PipelineInfo>> {
        let which: Vec<usize> = match port {
            Some(name) => vec![self.port_index(name)?],
            None => (0..self.ports().len()).collect(),
        };
        Ok(which
            .into_iter()
            .map(|i| {
                let pipeline = self.pipeline(i);
                let totals = self.stage_totals(i);
                let stages = pipeline
                    .spec()
                    .stages
                    .iter()
                    .map(|s| {
                        let t = totals.iter().find(|(id, _)| id.as_deref() == Some(s.id.as_str())).map(|(_, t)| *t).unwrap_or_default();
                        StageInfo { spec: to_proto_stage(s), packets: t.packets, bytes: t.bytes }
                    })
                    .collect();
                PipelineInfo {
                    port: self.ports()[i].name.clone(),
                    generation: self.generation(i),
                    stages,
                    default: to_proto_action(&pipeline.spec().default.as_action()),
                }
            })
            .collect())
    }

    fn replace_pipeline(&self, port: &str, spec: ProtoPipeline) -> BackendResult<SwapReport> {
        let stages = spec.stages.iter().map(from_proto_stage).collect::<BackendResult<Vec<_>>>()?;
        let default = spec.default.as_ref().map(default_action).transpose()?;
        self.checked_edit(port, |current| {
            current.stages = stages;
            if let Some(d) = default {
                current.default = d;
            }
            Ok(())
        })
    }

    fn add_stage(&self, port: &str, stage: ProtoStage, position: Option<usize>) -> BackendResult<SwapReport> {
        let stage = from_proto_stage(&stage)?;
        let name = port.to_owned();
        self.checked_edit(port, |spec| {
            let len = spec.stages.len();
            let at = position.unwrap_or(len);
            if at > len {
                return Err(ControlError::Position { port: name, position: at, len });
            }
            spec.stages.insert(at, stage);
            Ok(())
        })
    }

    fn remove_stage(&self, port: &str, id: &str) -> BackendResult<SwapReport> {
        let name = port.to_owned();
        self.checked_edit(port, |spec| {
            let at = spec.position(id).ok_or_else(|| ControlError::NoStage { port: name, id: id.to_owned() })?;
            spec.stages.remove(at);
            Ok(())
        })
    }

    fn move_stage(&self, port: &str, id: &str, position: usize) -> BackendResult<SwapReport> {
        let name = port.to_owned();
        self.checked_edit(port, |spec| {
            let from = spec.position(id).ok_or_else(|| ControlError::NoStage { port: name.clone(), id: id.to_owned() })?;
            let len = spec.stages.len();
            if position >= len {
                return Err(ControlError::Position { port: name, position, len });
            }
            let stage = spec.stages.remove(from);
            spec.stages.insert(position, stage);
            Ok(())
        })
    }

    fn set_port_action(&self, port: &str, action: &Action) -> BackendResult<SwapReport> {
        let default = default_action(action)?;
        self.checked_edit(port, |spec| {
            spec.default = default;
            Ok(())
        })
    }

    fn reload(&self) -> BackendResult<ReloadReport> {
        let changes = RuntimeHandle::reload(self)?;
        Ok(ReloadReport { config: self.config_path().map(PathBuf::from).unwrap_or_default(), changes })
    }

    fn capture_start(&self, spec: &CaptureSpec) -> BackendResult<CaptureInfo> {
        let port = spec.port.as_deref().map(|p| self.port_index(p)).transpose()?;
        let request = CaptureRequest {
            path: spec.path.clone(),
            port,
            limit: spec.limit,
            snaplen: spec.snaplen.unwrap_or(DEFAULT_SNAPLEN),
            filter: spec.filter.clone(),
        };
        let r = self.captures().start(request)?;
        Ok(capture_info(self, r))
    }

    fn capture_stop(&self) -> BackendResult<CaptureInfo> {
        let r = self.captures().stop()?;
        Ok(capture_info(self, r))
    }

    fn fw_stats(&self) -> BackendResult<FwStatsReply> {
        let (file, totals) = self.firewall_totals();
        Ok(FwStatsReply { file, rules: fw_entries(totals) })
    }
}

fn fw_entries(totals: Vec<FwRuleTotals>) -> Vec<FwRuleEntry> {
    totals
        .into_iter()
        .map(|t| FwRuleEntry {
            index: t.index,
            rule: t.stats.name,
            line: t.line,
            kernel_packets: t.stats.kernel.packets,
            kernel_bytes: t.stats.kernel.bytes,
            user_packets: t.stats.user.packets,
            user_bytes: t.stats.user.bytes,
            kernel_on: t.kernel_on,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_translate_both_ways() {
        let proto = ProtoStage {
            id: "dns".into(),
            filter: "udp port 53".into(),
            format: FilterFormat::Tcpdump,
            section: None,
            action: Action::Forward("b".into()),
        };
        let mine = from_proto_stage(&proto).unwrap();
        assert_eq!(mine.action, ActionSpec::Forward("b".into()));
        assert_eq!(to_proto_stage(&mine), proto);
        let file = ProtoStage { format: FilterFormat::File, filter: "/x.bpf".into(), action: Action::Verdict, ..proto.clone() };
        assert_eq!(from_proto_stage(&file).unwrap().filter, FilterSpec::File { path: "/x.bpf".into(), format: None });
        let obj = ProtoStage { section: Some("xdp".into()), ..file };
        assert_eq!(from_proto_stage(&obj).unwrap_err().kind, BackendErrorKind::Unsupported);
        let bad = ProtoStage { id: "a b".into(), ..proto };
        assert_eq!(from_proto_stage(&bad).unwrap_err().kind, BackendErrorKind::Rejected);
        assert!(default_action(&Action::Sample).is_err());
        assert_eq!(default_action(&Action::Reflect).unwrap(), DefaultAction::Reflect);
    }
}
