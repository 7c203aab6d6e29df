//! The control protocol: one JSON object per line in each direction, versioned with `"v"`.
//!
//! A request is `{"v":1,"id":ID,"cmd":NAME,...arguments}`; the answer to it is
//! `{"v":1,"id":ID,"ok":true,"result":...}` or `{"v":1,"id":ID,"ok":false,"error":{"code":...,
//! "message":...}}`. `id` is any JSON number or string the client picks; it is echoed unchanged.
//!
//! Requests are parsed by hand from a `serde_json::Value` rather than by a derived
//! `Deserialize`, because serde's type errors do not say which field was wrong, and an operator
//! typing into `socat` deserves "field `reset`: expected a boolean, got a string". The types
//! still derive `Serialize` (the client sends them) and the replies derive both directions.
//! `docs/control-protocol.md` is the reference for everything here.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use crate::metrics::{FwRuleEntry, QueueEntry, SteerEntry, SteerEntryCounters, StageEntry};

/// The protocol version this build speaks. A request with another `v` is refused with
/// [`ErrorCode::BadVersion`]; additive changes (new commands, new optional fields, new reply
/// fields) do not bump it.
pub const VERSION: u64 = 1;

/// Longest request line accepted, newline included. A longer line is answered with
/// [`ErrorCode::LineTooLong`] and the connection is closed, since the rest of it cannot be
/// told apart from the next request.
pub const MAX_LINE: usize = 64 * 1024;

/// Longest stage id: ids label metrics, so they stay short and printable.
pub const MAX_STAGE_ID: usize = 64;

/// Machine-readable error classes; the message says the specifics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON, or not a JSON object.
    InvalidJson,
    /// The line exceeds [`MAX_LINE`]; the server closes the connection after saying so.
    LineTooLong,
    /// `v` is missing or not [`VERSION`].
    BadVersion,
    /// `cmd` names no command.
    UnknownCommand,
    /// An argument is missing, unknown, of the wrong type or out of range.
    InvalidArgument,
    /// A named port, stage or file does not exist.
    NotFound,
    /// The request is well-formed but the dataplane refuses it: a filter that fails to compile
    /// or verify, a config that fails validation. Nothing was changed.
    Rejected,
    /// The dataplane cannot do this (e.g. an action the port's layout does not allow).
    Unsupported,
    /// The server is at its connection limit; sent once, then the connection is closed.
    Busy,
    /// The peer is neither root nor the daemon's user; sent once, then the connection is closed.
    PermissionDenied,
    /// Something failed inside the dataplane; the message says what.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Rejected => "rejected",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Busy => "busy",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reply: its class and a lowercase message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ProtoError {
        ProtoError { code, message: message.into() }
    }

    fn arg(message: impl Into<String>) -> ProtoError {
        ProtoError::new(ErrorCode::InvalidArgument, message)
    }
}

/// What a stage (or a port's default) does with a packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Drop,
    /// Swap the Ethernet addresses and send it back out of the port it came in on.
    Reflect,
    /// Send it out of the named port.
    Forward(String),
    /// Count it in the stage's counters and go on with the next stage.
    Count,
    /// Copy it to the capture (if one is running) and go on with the next stage.
    Sample,
    /// Go on with the next stage (the stage only filters what later stages see counted).
    Continue,
    /// An eBPF filter's own return value (XDP_DROP/PASS/TX/REDIRECT) decides.
    Verdict,
}

impl Action {
    /// Whether the action ends the packet's walk through the pipeline; only these may be a
    /// port's default.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Action::Drop | Action::Reflect | Action::Forward(_))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Drop => f.write_str("drop"),
            Action::Reflect => f.write_str("reflect"),
            Action::Forward(port) => write!(f, "forward:{port}"),
            Action::Count => f.write_str("count"),
            Action::Sample => f.write_str("sample"),
            Action::Continue => f.write_str("continue"),
            Action::Verdict => f.write_str("verdict"),
        }
    }
}

impl FromStr for Action {
    type Err = String;

    /// `drop`, `reflect`, `forward:PORT`, `count`, `sample`, `continue`, `verdict`.
    fn from_str(s: &str) -> Result<Action, String> {
        Ok(match s {
            "drop" => Action::Drop,
            "reflect" => Action::Reflect,
            "count" => Action::Count,
            "sample" => Action::Sample,
            "continue" => Action::Continue,
            "verdict" => Action::Verdict,
            _ => match s.strip_prefix("forward:") {
                Some(port) if !port.is_empty() => Action::Forward(port.to_owned()),
                Some(_) => return Err("`forward:` needs a port name, e.g. `forward:b`".into()),
                None => {
                    return Err(format!(
                        "unknown action `{s}` (expected drop, reflect, forward:PORT, count, sample, continue or verdict)"
                    ));
                }
            },
        })
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Action, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a stage's `filter` text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterFormat {
    /// A tcpdump expression.
    #[default]
    Tcpdump,
    /// Classic BPF text (`tcpdump -ddd` or `-dd`).
    Classic,
    /// eBPF bytecode as hex digits.
    Hex,
    /// eBPF assembler text.
    Asm,
    /// `filter` is a path; its contents decide (classic text, eBPF hex/asm/bytes, ELF object
    /// with `section`).
    File,
}

impl FilterFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterFormat::Tcpdump => "tcpdump",
            FilterFormat::Classic => "classic",
            FilterFormat::Hex => "hex",
            FilterFormat::Asm => "asm",
            FilterFormat::File => "file",
        }
    }
}

impl FromStr for FilterFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<FilterFormat, String> {
        Ok(match s {
            "tcpdump" => FilterFormat::Tcpdump,
            "classic" => FilterFormat::Classic,
            "hex" => FilterFormat::Hex,
            "asm" => FilterFormat::Asm,
            "file" => FilterFormat::File,
            _ => return Err(format!("unknown filter format `{s}` (expected tcpdump, classic, hex, asm or file)")),
        })
    }
}

/// One pipeline stage as the operator describes it; the dataplane compiles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Unique within the port's pipeline; a stage that keeps its id across a swap keeps its
    /// counters.
    pub id: String,
    pub filter: String,
    #[serde(default)]
    pub format: FilterFormat,
    /// The program's section in an ELF object (`format = "file"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// What happens to a packet the filter matches.
    pub action: Action,
}

/// A whole pipeline: its stages in order and the default action for packets no stage took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    #[serde(default, rename = "stage", alias = "stages")]
    pub stages: Vec<StageSpec>,
    /// `None` keeps the port's current default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Action>,
}

/// Where a replacement pipeline comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineSource {
    Inline(PipelineSpec),
    /// A TOML (or `.json`) file with `default` and `[[stage]]` tables, read by the controller.
    File(PathBuf),
}

/// `capture_start` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSpec {
    /// Where the pcap file is written (by the daemon, with its permissions).
    pub path: PathBuf,
    /// Only this port's packets; all ports when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Stop by itself after this many packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Bytes kept of each packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
    /// A tcpdump expression: capture the port's (or every port's) frames that match it, as
    /// they arrive, instead of what `sample` stages and rules pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A request's command and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Stats { reset: bool },
    PipelineList { port: Option<String> },
    PipelineReplace { port: String, source: PipelineSource },
    StageAdd { port: String, stage: StageSpec, position: Option<usize> },
    StageRemove { port: String, id: String },
    StageMove { port: String, id: String, position: usize },
    PortAction { port: String, action: Action },
    Reload,
    Histogram { reset: bool },
    CaptureStart(CaptureSpec),
    CaptureStop,
    FwStats,
}

/// Every command name, for error messages and the documentation test.
pub const COMMANDS: &[&str] = &[
    "status",
    "stats",
    "pipeline_list",
    "pipeline_replace",
    "stage_add",
    "stage_remove",
    "stage_move",
    "port_action",
    "reload",
    "histogram",
    "capture_start",
    "capture_stop",
    "fw_stats",
];

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Stats { .. } => "stats",
            Command::PipelineList { .. } => "pipeline_list",
            Command::PipelineReplace { .. } => "pipeline_replace",
            Command::StageAdd { .. } => "stage_add",
            Command::StageRemove { .. } => "stage_remove",
            Command::StageMove { .. } => "stage_move",
            Command::PortAction { .. } => "port_action",
            Command::Reload => "reload",
            Command::Histogram { .. } => "histogram",
            Command::CaptureStart(_) => "capture_start",
            Command::CaptureStop => "capture_stop",
            Command::FwStats => "fw_stats",
        }
    }

    /// The arguments as JSON object members (without `v`, `id`, `cmd`).
    fn args(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        match self {
            Command::Status | Command::Reload | Command::CaptureStop | Command::FwStats => {}
            Command::Stats { reset } | Command::Histogram { reset } => {
                if *reset {
                    put("reset", Value::Bool(true));
                }
            }
            Command::PipelineList { port } => {
                if let Some(p) = port {
                    put("port", Value::String(p.clone()));
                }
            }
            Command::PipelineReplace { port, source } => {
                put("port", Value::String(port.clone()));
                match source {
                    PipelineSource::Inline(spec) => {
                        put("stages", spec.stages.to_json());
                        if let Some(d) = &spec.default {
                            put("default", Value::String(d.to_string()));
                        }
                    }
                    PipelineSource::File(path) => put("file", Value::String(path.display().to_string())),
                }
            }
            Command::StageAdd { port, stage, position } => {
                put("port", Value::String(port.clone()));
                put("stage", stage.to_json());
                if let Some(p) = position {
                    put("position", Value::from(*p));
                }
            }
            Command::StageRemove { port, id } => {
                put("port", Value::String(port.clone()));
                put("stage", Value::String(id.clone()));
            }
            Command::StageMove { port, id, position } => {
                put("port", Value::String(port.clone()));
                put("stage", Value::String(id.clone()));
                put("position", Value::from(*position));
            }
            Command::PortAction { port, action } => {
                put("port", Value::String(port.clone()));
                put("action", Value::String(action.to_string()));
            }
            Command::CaptureStart(spec) => {
                if let Value::Object(o) = spec.to_json() {
                    m.extend(o);
                }
            }
        }
        m
    }
}

/// Serializing the protocol's own plain-data types cannot fail (no maps with non-string keys,
/// no custom serializers that error); this keeps that fact in one place.
mod erased {
    use serde::Serialize;
    use serde_json::Value;

    pub trait ToJson {
        fn to_json(&self) -> Value;
    }

    impl<T: Serialize> ToJson for T {
        fn to_json(&self) -> Value {
            serde_json::to_value(self).unwrap_or_else(|e| Value::String(format!("unserializable: {e}")))
        }
    }
}
pub use erased::ToJson;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the reply; `null` when the client sent none.
    pub id: Value,
    pub command: Command,
}

impl Request {
    /// The request as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut m = Map::new();
        m.insert("v".into(), Value::from(VERSION));
        if !self.id.is_null() {
            m.insert("id".into(), self.id.clone());
        }
        m.insert("cmd".into(), Value::String(self.command.name().into()));
        m.extend(self.command.args());
        let mut line = Value::Object(m).to_string();
        line.push('\n');
        line
    }

    /// Parses one request line (without its newline). On error, the id is returned as far as
    /// it could be read, so the error reply can still carry it.
    pub fn parse(line: &[u8]) -> Result<Request, (Value, ProtoError)> {
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| (Value::Null, ProtoError::new(ErrorCode::InvalidJson, format!("invalid json: {e}"))))?;
        let Value::Object(mut obj) = value else {
            return Err((Value::Null, ProtoError::new(ErrorCode::InvalidJson, format!("expected a json object, got {}", kind(&value)))));
        };
        let id = match obj.remove("id") {
            None | Some(Value::Null) => Value::Null,
            Some(v @ (Value::Number(_) | Value::String(_))) => v,
            Some(other) => return Err((Value::Null, ProtoError::arg(format!("field `id`: expected a number or a string, got {}", kind(&other))))),
        };
        let fail = |e: ProtoError| (id.clone(), e);
        match obj.remove("v") {
            Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
            Some(other) => {
                return Err(fail(ProtoError::new(ErrorCode::BadVersion, format!("protocol version {other} is not supported (this server speaks {VERSION})"))));
            }
            None => return Err(fail(ProtoError::new(ErrorCode::BadVersion, format!("field `v` (protocol version) is missing; this server speaks {VERSION}")))),
        }
        let cmd = match obj.remove("cmd") {
            Some(Value::String(s)) => s,
            Some(other) => return Err(fail(ProtoError::arg(format!("field `cmd`: expected a string, got {}", kind(&other))))),
            None => return Err(fail(ProtoError::arg("field `cmd` is missing"))),
        };
        let command = parse_command(&cmd, Args::new(obj, "")).map_err(fail)?;
        Ok(Request { id, command })
    }
}

fn parse_command(cmd: &str, mut a: Args) -> Result<Command, ProtoError> {
    let command = match cmd {
        "status" => Command::Status,
        "stats" => Command::Stats { reset: a.opt_bool("reset")?.unwrap_or(false) },
        "pipeline_list" => Command::PipelineList { port: a.opt_str("port")? },
        "pipeline_replace" => {
            let port = a.str("port")?;
            let stages = a.take("stages");
            let default = a.opt_action("default")?;
            let file = a.opt_str("file")?;
            let source = match (stages, file) {
                (Some(stages), None) => {
                    let stages = a.stage_list("stages", stages)?;
                    let spec = PipelineSpec { stages, default };
                    // Stage lists are named `stages` here and `stage` in files.
                    spec.validate().map_err(|e| ProtoError::arg(format!("field `{}", e.replacen("stage[", "stages[", 1))))?;
                    PipelineSource::Inline(spec)
                }
                (None, Some(file)) if default.is_none() => PipelineSource::File(PathBuf::from(file)),
                (None, Some(_)) => return Err(ProtoError::arg("field `default`: give it inside the file, not beside `file`")),
                (Some(_), Some(_)) => return Err(ProtoError::arg("give either `stages` or `file`, not both")),
                (None, None) => return Err(ProtoError::arg("one of `stages` (a list of stages) or `file` (a path) is required")),
            };
            Command::PipelineReplace { port, source }
        }
        "stage_add" => {
            let port = a.str("port")?;
            let stage = match a.take("stage") {
                Some(v) => stage_spec(v, "stage")?,
                None => return Err(ProtoError::arg("field `stage` is missing")),
            };
            Command::StageAdd { port, stage, position: a.opt_usize("position")? }
        }
        "stage_remove" => Command::StageRemove { port: a.str("port")?, id: a.str("stage")? },
        "stage_move" => {
            let port = a.str("port")?;
            // The stage's id travels as `stage`: `id` is the request's own.
            let id = a.str("stage")?;
            let position = a.opt_usize("position")?.ok_or_else(|| ProtoError::arg("field `position` is missing"))?;
            Command::StageMove { port, id, position }
        }
        "port_action" => {
            let port = a.str("port")?;
            let action = a.opt_action("action")?.ok_or_else(|| ProtoError::arg("field `action` is missing"))?;
            if !action.is_terminal() {
                return Err(ProtoError::arg(format!("field `action`: `{action}` is not a port action (expected drop, reflect or forward:PORT)")));
            }
            Command::PortAction { port, action }
        }
        "reload" => Command::Reload,
        "histogram" => Command::Histogram { reset: a.opt_bool("reset")?.unwrap_or(false) },
        "capture_start" => {
            let path = PathBuf::from(a.str("path")?);
            let port = a.opt_str("port")?;
            let limit = a.opt_u64("limit")?;
            let snaplen = match a.opt_u64("snaplen")? {
                None => None,
                Some(n @ 1..=65535) => Some(n as u32),
                Some(n) => return Err(ProtoError::arg(format!("field `snaplen`: {n} is not from 1 to 65535"))),
            };
            let filter = a.opt_str("filter")?;
            if filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
                return Err(ProtoError::arg("field `filter`: an empty expression would capture everything; leave it out to capture `sample` matches"));
            }
            Command::CaptureStart(CaptureSpec { path, port, limit, snaplen, filter })
        }
        "capture_stop" => Command::CaptureStop,
        "fw_stats" => Command::FwStats,
        other => {
            return Err(ProtoError::new(
                ErrorCode::UnknownCommand,
                format!("unknown command `{other}` (expected one of: {})", COMMANDS.join(", ")),
            ));
        }
    };
    a.finish(&format!("command `{cmd}`"))?;
    Ok(command)
}

fn stage_spec(v: Value, path: &str) -> Result<StageSpec, ProtoError> {
    let Value::Object(obj) = v else {
        return Err(ProtoError::arg(format!("field `{path}`: expected an object, got {}", kind(&v))));
    };
    let mut a = Args::new(obj, path);
    let id = a.str("id")?;
    let filter = a.str("filter")?;
    let format = match a.opt_str("format")? {
        None => FilterFormat::default(),
        Some(f) => f.parse().map_err(|e| ProtoError::arg(format!("field `{path}.format`: {e}")))?,
    };
    let section = a.opt_str("section")?;
    let action = a.opt_action("action")?.ok_or_else(|| ProtoError::arg(format!("field `{path}.action` is missing")))?;
    a.finish(&format!("`{path}`"))?;
    let spec = StageSpec { id, filter, format, section, action };
    spec.validate().map_err(|e| ProtoError::arg(format!("field `{path}.{e}")))?;
    Ok(spec)
}

impl StageSpec {
    /// The rules a derived `Deserialize` cannot express (stage files are read that way). The
    /// error starts with the offending field's name and a backquote.
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        if id.is_empty() || id.len() > MAX_STAGE_ID || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(format!("id`: `{id}` must be 1-{MAX_STAGE_ID} letters, digits, '-', '_' or '.'"));
        }
        if self.section.is_some() && self.format != FilterFormat::File {
            return Err("section`: only valid with format `file`".into());
        }
        Ok(())
    }
}

impl PipelineSpec {
    /// Every stage valid, ids unique, the default (if any) a terminal action.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.stages.iter().enumerate() {
            s.validate().map_err(|e| format!("stage[{i}].{e}"))?;
            if !seen.insert(s.id.as_str()) {
                return Err(format!("stage[{i}].id`: `{}` is used twice", s.id));
            }
        }
        match &self.default {
            Some(a) if !a.is_terminal() => Err(format!("default`: `{a}` does not end a packet's walk (expected drop, reflect or forward:PORT)")),
            _ => Ok(()),
        }
    }
}

/// Typed access to an object's members that names the field in every error and notices the
/// members nobody asked for.
struct Args {
    obj: Map<String, Value>,
    /// Prefix for field names in messages (`stages[2]`), empty at the top level.
    path: String,
}

impl Args {
    fn new(obj: Map<String, Value>, path: &str) -> Args {
        Args { obj, path: path.to_owned() }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.obj.remove(key)
    }

    fn str(&mut self, key: &str) -> Result<String, ProtoError> {
        self.opt_str(key)?.ok_or_else(|| ProtoError::arg(format!("field `{}` is missing", self.field(key))))
    }

    fn opt_str(&mut self, key: &str) -> Result<Option<String>, ProtoError> {
        match self.obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", &other)),
        }
    }

    fn opt_bool(&mut self, key: &str) -> Result<Option<bool>, ProtoError> {
        match self.obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong(key, "a boolean", &other)),
        }
    }

    fn opt_u64(&mut self, key: &str) -> Result<Option<u64>, ProtoError> {
        match self.obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(self.wrong(key, "a non-negative integer", &other)),
        }
    }

    fn opt_usize(&mut self, key: &str) -> Result<Option<usize>, ProtoError> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(n) => usize::try_from(n).map(Some).map_err(|_| ProtoError::arg(format!("field `{}`: {n} is too large", self.field(key)))),
        }
    }

    fn opt_action(&mut self, key: &str) -> Result<Option<Action>, ProtoError> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|e| ProtoError::arg(format!("field `{}`: {e}", self.field(key)))),
        }
    }

    fn stage_list(&self, key: &str, v: Value) -> Result<Vec<StageSpec>, ProtoError> {
        let Value::Array(items) = v else {
            return Err(self.wrong(key, "a list of stages", &v));
        };
        let field = self.field(key);
        items.into_iter().enumerate().map(|(i, s)| stage_spec(s, &format!("{field}[{i}]"))).collect()
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> ProtoError {
        ProtoError::arg(format!("field `{}`: expected {expected}, got {}", self.field(key), kind(got)))
    }

    /// Members left over are fields the command does not have: an error, since a misspelt
    /// optional field would otherwise be silently ignored.
    fn finish(self, what: &str) -> Result<(), ProtoError> {
        match self.obj.keys().next() {
            None => Ok(()),
            Some(k) => Err(ProtoError::arg(format!("{what} has no field `{k}`"))),
        }
    }
}

/// A JSON value's type, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.is_i64() && n.as_u64().is_none() => "a negative number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A reply as it travels; `result` on success, `error` on failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u64,
    #[serde(default)]
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtoError>,
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Response {
        Response { v: VERSION, id, ok: true, result: Some(result), error: None }
    }

    pub fn err(id: Value, error: ProtoError) -> Response {
        Response { v: VERSION, id, ok: false, result: None, error: Some(error) }
    }

    /// One line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut line = self.to_json().to_string();
        line.push('\n');
        line
    }

    /// The result, or the error as `Err`.
    pub fn into_result(self) -> Result<Value, ProtoError> {
        match (self.ok, self.result, self.error) {
            (true, Some(r), _) => Ok(r),
            (true, None, _) => Ok(Value::Null),
            (false, _, Some(e)) => Err(e),
            (false, _, None) => Err(ProtoError::new(ErrorCode::Internal, "error reply without an error")),
        }
    }
}

// ---- replies -------------------------------------------------------------------------------

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: f64,
    /// The config file the daemon runs (and `reload` re-reads).
    pub config: PathBuf,
    pub workers: usize,
    /// Pipelines published since start.
    pub swaps: u64,
    pub ports: Vec<PortStatus>,
    /// The running capture, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureInfo>,
    /// The firewall in front of the pipelines, if the config names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallStatus>,
}

/// `status`: the firewall the workers run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStatus {
    pub file: PathBuf,
    pub rules: usize,
    /// Rules the kernel stage runs, per port interface.
    pub kernel_rules: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    pub interface: String,
    pub queues: Vec<u32>,
    /// The default action (what a packet no stage took gets).
    pub action: Action,
    pub stages: usize,
    /// Incremented on every swap of this port's pipeline.
    pub generation: u64,
}

/// `stats`: counters since start, or since the last `stats` with `reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    pub queues: Vec<QueueEntry>,
    pub stages: Vec<StageEntry>,
    pub steering: Vec<SteerEntry>,
    pub swaps: u64,
    /// Seconds the numbers cover.
    pub interval_secs: u64,
}

/// `pipeline_list`: one port's pipeline as it runs, with its stage counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineInfo {
    pub port: String,
    pub generation: u64,
    pub stages: Vec<StageInfo>,
    pub default: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageInfo {
    #[serde(flatten)]
    pub spec: StageSpec,
    pub packets: u64,
    pub bytes: u64,
}

/// Every command that changes a pipeline answers with what it published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapReport {
    pub port: String,
    /// The port's pipeline generation now running.
    pub generation: u64,
    pub stages: usize,
    /// Time spent compiling and verifying on the controller thread.
    pub compile_us: u64,
}

/// `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub config: PathBuf,
    /// One line per change applied ("port a: pipeline replaced (3 stages)"); empty when the file
    /// equals the running config.
    pub changes: Vec<String>,
}

/// `histogram`: the per-batch processing time, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramReply {
    pub unit: String,
    pub count: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub stdev: f64,
    /// `(quantile, value)` at 0.5, 0.9, 0.99, 0.999, 1.0.
    pub quantiles: Vec<(f64, u64)>,
    /// Non-empty buckets `(highest value in the bucket, count)`, on a log-2 scale.
    pub buckets: Vec<(u64, u64)>,
}

/// `fw_stats`: the firewall's per-rule counters since start (counters of a rule that kept its
/// name across reloads continue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwStatsReply {
    /// The firewall file the rules came from; absent when the daemon runs no firewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Every rule in order, then the default policy (named `default`).
    pub rules: Vec<FwRuleEntry>,
}

/// A capture, running or just stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The capture's own filter, if it was started with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub packets: u64,
    /// Packets that matched a `sample` stage but found the capture ring full.
    pub dropped: u64,
    pub running: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Request, ProtoError> {
        Request::parse(line.as_bytes()).map_err(|(_, e)| e)
    }

    fn stage(id: &str) -> StageSpec {
        StageSpec { id: id.into(), filter: "udp port 53".into(), format: FilterFormat::Tcpdump, section: None, action: Action::Count }
    }

    #[test]
    fn every_command_round_trips_through_its_line() {
        let commands = vec![
            Command::Status,
            Command::Stats { reset: true },
            Command::Stats { reset: false },
            Command::PipelineList { port: Some("a".into()) },
            Command::PipelineList { port: None },
            Command::PipelineReplace {
                port: "a".into(),
                source: PipelineSource::Inline(PipelineSpec { stages: vec![stage("dns"), stage("x")], default: Some(Action::Drop) }),
            },
            Command::PipelineReplace { port: "a".into(), source: PipelineSource::File("/etc/p.toml".into()) },
            Command::StageAdd { port: "a".into(), stage: stage("dns"), position: Some(0) },
            Command::StageAdd {
                port: "a".into(),
                stage: StageSpec { format: FilterFormat::File, section: Some("xdp".into()), action: Action::Verdict, ..stage("o") },
                position: None,
            },
            Command::StageRemove { port: "a".into(), id: "dns".into() },
            Command::StageMove { port: "a".into(), id: "dns".into(), position: 3 },
            Command::PortAction { port: "a".into(), action: Action::Forward("b".into()) },
            Command::Reload,
            Command::Histogram { reset: false },
            Command::CaptureStart(CaptureSpec { path: "/tmp/c.pcap".into(), port: Some("a".into()), limit: Some(10), snaplen: Some(128), filter: None }),
            Command::CaptureStart(CaptureSpec { path: "/tmp/d.pcap".into(), port: None, limit: None, snaplen: None, filter: Some("udp port 53".into()) }),
            Command::CaptureStop,
            Command::FwStats,
        ];
        let mut names = std::collections::BTreeSet::new();
        for (i, command) in commands.into_iter().enumerate() {
            names.insert(command.name());
            let req = Request { id: Value::from(i), command };
            let line = req.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(parse(line.trim_end()).unwrap(), req, "{line}");
        }
        assert_eq!(names.len(), COMMANDS.len());
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("{", ErrorCode::InvalidJson, "invalid json"),
            ("[1]", ErrorCode::InvalidJson, "expected a json object, got a list"),
            (r#"{"cmd":"status"}"#, ErrorCode::BadVersion, "field `v`"),
            (r#"{"v":2,"cmd":"status"}"#, ErrorCode::BadVersion, "version 2 is not supported"),
            (r#"{"v":1}"#, ErrorCode::InvalidArgument, "field `cmd` is missing"),
            (r#"{"v":1,"cmd":7}"#, ErrorCode::InvalidArgument, "field `cmd`: expected a string, got a number"),
            (r#"{"v":1,"cmd":"launch"}"#, ErrorCode::UnknownCommand, "unknown command `launch`"),
            (r#"{"v":1,"cmd":"stats","reset":"yes"}"#, ErrorCode::InvalidArgument, "field `reset`: expected a boolean, got a string"),
            (r#"{"v":1,"cmd":"stats","rest":true}"#, ErrorCode::InvalidArgument, "command `stats` has no field `rest`"),
            (r#"{"v":1,"cmd":"stage_move","port":"a","stage":"x","position":-1}"#, ErrorCode::InvalidArgument, "field `position`: expected a non-negative integer, got a negative number"),
            (r#"{"v":1,"cmd":"stage_move","port":"a","stage":"x"}"#, ErrorCode::InvalidArgument, "field `position` is missing"),
            (r#"{"v":1,"cmd":"stage_remove","port":"a"}"#, ErrorCode::InvalidArgument, "field `stage` is missing"),
            (r#"{"v":1,"cmd":"port_action","port":"a","action":"fling"}"#, ErrorCode::InvalidArgument, "field `action`: unknown action `fling`"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a"}"#, ErrorCode::InvalidArgument, "one of `stages`"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a","stages":[],"file":"x"}"#, ErrorCode::InvalidArgument, "not both"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a","stages":{}}"#, ErrorCode::InvalidArgument, "field `stages`: expected a list of stages, got an object"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a","stages":[{"id":"x","filter":"ip","action":"drop","colour":1}]}"#, ErrorCode::InvalidArgument, "`stages[0]` has no field `colour`"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a","stages":[{"id":"x","filter":3,"action":"drop"}]}"#, ErrorCode::InvalidArgument, "field `stages[0].filter`: expected a string"),
            (r#"{"v":1,"cmd":"stage_add","port":"a","stage":{"id":"a b","filter":"ip","action":"drop"}}"#, ErrorCode::InvalidArgument, "field `stage.id`"),
            (r#"{"v":1,"cmd":"stage_add","port":"a","stage":{"id":"a","filter":"ip","action":"drop","format":"pcap"}}"#, ErrorCode::InvalidArgument, "unknown filter format `pcap`"),
            (r#"{"v":1,"cmd":"stage_add","port":"a","stage":{"id":"a","filter":"ip","action":"drop","section":"xdp"}}"#, ErrorCode::InvalidArgument, "only valid with format `file`"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a","stages":[{"id":"x","filter":"ip","action":"drop"},{"id":"x","filter":"ip","action":"drop"}]}"#, ErrorCode::InvalidArgument, "field `stages[1].id`: `x` is used twice"),
            (r#"{"v":1,"cmd":"pipeline_replace","port":"a","stages":[],"default":"count"}"#, ErrorCode::InvalidArgument, "field `default`: `count` does not end"),
            (r#"{"v":1,"cmd":"capture_start","path":"/tmp/x","snaplen":0}"#, ErrorCode::InvalidArgument, "field `snaplen`: 0 is not from 1"),
            (r#"{"v":1,"cmd":"capture_start","path":"/tmp/x","filter":" "}"#, ErrorCode::InvalidArgument, "field `filter`: an empty expression"),
            (r#"{"v":1,"cmd":"capture_start","path":"/tmp/x","filter":5}"#, ErrorCode::InvalidArgument, "field `filter`: expected a string"),
            (r#"{"v":1,"cmd":"status","id":[1]}"#, ErrorCode::InvalidArgument, "field `id`: expected a number or a string"),
        ];
        for (line, code, want) in cases {
            let e = parse(line).unwrap_err();
            assert_eq!(e.code, code, "{line}: {e}");
            assert!(e.message.contains(want), "{line}: got {}", e.message);
        }
    }

    #[test]
    fn the_id_survives_a_bad_command() {
        let (id, e) = Request::parse(br#"{"v":1,"id":"q7","cmd":"nope"}"#).unwrap_err();
        assert_eq!(id, Value::String("q7".into()));
        assert_eq!(e.code, ErrorCode::UnknownCommand);
    }

    #[test]
    fn every_command_and_error_code_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-protocol.md")).unwrap();
        for name in COMMANDS {
            let heading = doc.lines().any(|l| l.starts_with("### ") && l.contains(&format!("`{name}`")));
            assert!(heading, "docs/control-protocol.md has no section for `{name}`");
        }
        let codes = [
            ErrorCode::InvalidJson,
            ErrorCode::LineTooLong,
            ErrorCode::BadVersion,
            ErrorCode::UnknownCommand,
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::Rejected,
            ErrorCode::Unsupported,
            ErrorCode::Busy,
            ErrorCode::PermissionDenied,
            ErrorCode::Internal,
        ];
        for code in codes {
            assert!(doc.contains(&format!("| `{code}` |")), "error code `{code}` is not in the table");
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        assert_eq!(MAX_LINE, 65_536, "the documented line limit");
        assert!(doc.contains("65,536 bytes"));
    }

    #[test]
    fn actions_parse_and_print() {
        for s in ["drop", "reflect", "forward:b", "count", "sample", "continue", "verdict"] {
            assert_eq!(s.parse::<Action>().unwrap().to_string(), s);
        }
        assert!("forward:".parse::<Action>().unwrap_err().contains("needs a port"));
        assert!(Action::Drop.is_terminal() && !Action::Count.is_terminal());
    }

    #[test]
    fn pipeline_files_use_stage_tables() {
        let text = "default = \"drop\"\n[[stage]]\nid = \"dns\"\nfilter = \"udp port 53\"\naction = \"count\"\n";
        let spec: PipelineSpec = toml::from_str(text).unwrap();
        assert_eq!(spec, PipelineSpec { stages: vec![stage("dns")], default: Some(Action::Drop) });
    }

    #[test]
    fn responses_round_trip() {
        let ok = Response::ok(Value::from(3), serde_json::json!({"x": 1}));
        let back: Response = serde_json::from_str(ok.to_line().trim_end()).unwrap();
        assert_eq!(back.into_result().unwrap()["x"], 1);
        let err = Response::err(Value::Null, ProtoError::new(ErrorCode::NotFound, "no port `z`"));
        let line = err.to_line();
        assert!(line.contains(r#""code":"not_found""#), "{line}");
        let back: Response = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(back.into_result().unwrap_err().message, "no port `z`");
    }
}
