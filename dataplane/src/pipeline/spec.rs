//! What a pipeline is, as a person writes it: in the config (`[[port.stage]]`) or in a control
//! request (the same fields as JSON). Pure data plus the checks that need no compiler: ids,
//! action names, which fields go together. Compiling it is `compile`'s job.
//!
//! One serde shape ([`StageDoc`]) serves both TOML and JSON, so a stage listed by the control
//! socket can be pasted into a config file unchanged.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bpf::source::Format;

/// Longest stage id accepted: ids appear in metric labels and log lines.
pub const MAX_ID_LEN: usize = 64;

/// A check that failed; `key` is the field (`id`, `action`, `to`, `filter`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SpecError {
    pub key: &'static str,
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> SpecError {
    SpecError { key, reason: reason.into() }
}

/// Where a stage's filter comes from.
///
/// New sources slot in as variants: issue 6 adds `Object { path, section }` for clang-built
/// ELF objects, compiled by `compile::load_filter` like the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSpec {
    /// Inline text for one front end (a tcpdump expression unless `format` says otherwise).
    Text { text: String, format: Format },
    /// A filter file; its format is detected unless given.
    File { path: PathBuf, format: Option<Format> },
}

/// What a stage does to a packet its filter matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSpec {
    /// Discard it (ends the pipeline).
    Drop,
    /// Swap its MAC addresses and send it back out of its port (ends the pipeline).
    Reflect,
    /// Send it unchanged out of the named port, which must be this port's forwarding peer
    /// (ends the pipeline).
    Forward(String),
    /// Count it and go on with the next stage: a stage that exists for its counters.
    Count,
    /// Copy it to the capture ring (when a capture is running), then go on.
    Sample,
    /// Go on with the next stage; the match is still counted. Same effect as `Count`, named
    /// for stages kept in place but disabled.
    Continue,
    /// eBPF filters only: the program's return value is an XDP verdict and decides:
    /// DROP → drop, PASS → next stage, TX → out of the same port unchanged, REDIRECT → to the
    /// peer port, anything else (ABORTED, faults, unknown values) → drop, counted as aborted.
    Verdict,
}

impl ActionSpec {
    /// Parses the `action` field and its `to` companion.
    pub fn parse(action: &str, to: Option<&str>) -> Result<ActionSpec, SpecError> {
        let act = match action {
            "drop" => ActionSpec::Drop,
            "reflect" => ActionSpec::Reflect,
            "count" => ActionSpec::Count,
            "sample" => ActionSpec::Sample,
            "continue" => ActionSpec::Continue,
            "verdict" => ActionSpec::Verdict,
            "forward" => match to {
                Some(to) if !to.is_empty() => return Ok(ActionSpec::Forward(to.to_owned())),
                _ => return Err(bad("to", "action \"forward\" needs `to` (the port to send to)")),
            },
            other => {
                return Err(bad(
                    "action",
                    format!("unknown action `{other}` (expected drop, reflect, forward, count, sample, continue or verdict)"),
                ));
            }
        };
        match to {
            Some(_) => Err(bad("to", format!("only valid with action \"forward\", not \"{action}\""))),
            None => Ok(act),
        }
    }

    /// The `action` field's text.
    pub fn name(&self) -> &'static str {
        match self {
            ActionSpec::Drop => "drop",
            ActionSpec::Reflect => "reflect",
            ActionSpec::Forward(_) => "forward",
            ActionSpec::Count => "count",
            ActionSpec::Sample => "sample",
            ActionSpec::Continue => "continue",
            ActionSpec::Verdict => "verdict",
        }
    }

    /// The `to` field, for `forward`.
    pub fn to(&self) -> Option<&str> {
        match self {
            ActionSpec::Forward(to) => Some(to),
            _ => None,
        }
    }

    /// Whether a match ends the pipeline.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ActionSpec::Drop | ActionSpec::Reflect | ActionSpec::Forward(_))
    }
}

impl fmt::Display for ActionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionSpec::Forward(to) => write!(f, "forward to {to}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One stage: a filter and what to do when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StageDoc", into = "StageDoc")]
pub struct StageSpec {
    /// Stable name: counters follow the id across pipeline swaps.
    pub id: String,
    pub filter: FilterSpec,
    pub action: ActionSpec,
}

/// The wire/config shape of a stage: `id`, one of `filter` (inline text) or `file`, optional
/// `format` (tcpdump, classic, hex, asm, bytes), `action`, and `to` for `forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageDoc {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Reads a front end's name as the config and the control protocol spell it.
pub fn parse_format(name: &str) -> Result<Format, SpecError> {
    Ok(match name {
        "tcpdump" => Format::Tcpdump,
        "classic" => Format::Classic,
        "hex" => Format::Hex,
        "asm" => Format::Asm,
        "bytes" => Format::Bytes,
        "object" => Format::Object,
        other => return Err(bad("format", format!("unknown format `{other}` (expected tcpdump, classic, hex, asm, bytes or object)"))),
    })
}

/// The inverse of [`parse_format`].
pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Tcpdump => "tcpdump",
        Format::Classic => "classic",
        Format::Hex => "hex",
        Format::Asm => "asm",
        Format::Bytes => "bytes",
        Format::Object => "object",
    }
}

/// Checks a stage id: 1 to [`MAX_ID_LEN`] letters, digits, `-`, `_` or `.`.
pub fn check_id(id: &str) -> Result<(), SpecError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(bad("id", format!("`{id}` must be 1 to {MAX_ID_LEN} letters, digits, '-', '_' or '.'")));
    }
    Ok(())
}

impl TryFrom<StageDoc> for StageSpec {
    type Error = SpecError;

    fn try_from(doc: StageDoc) -> Result<StageSpec, SpecError> {
        check_id(&doc.id)?;
        let format = doc.format.as_deref().map(parse_format).transpose()?;
        let filter = match (doc.filter, doc.file) {
            (Some(text), None) => FilterSpec::Text { text, format: format.unwrap_or(Format::Tcpdump) },
            (None, Some(path)) => FilterSpec::File { path, format },
            (Some(_), Some(_)) => return Err(bad("file", "give either `filter` (inline text) or `file`, not both")),
            (None, None) => return Err(bad("filter", "a stage needs `filter` (inline text) or `file`")),
        };
        if let FilterSpec::Text { format: Format::Bytes | Format::Object, .. } = filter {
            return Err(bad("format", "raw bytecode (`bytes`) and eBPF objects (`object`) can only come from a `file`"));
        }
        let action = ActionSpec::parse(&doc.action, doc.to.as_deref())?;
        Ok(StageSpec { id: doc.id, filter, action })
    }
}

impl From<StageSpec> for StageDoc {
    fn from(s: StageSpec) -> StageDoc {
        let (filter, file, format) = match s.filter {
            FilterSpec::Text { text, format } => {
                (Some(text), None, (format != Format::Tcpdump).then(|| format_name(format).to_owned()))
            }
            FilterSpec::File { path, format } => (None, Some(path), format.map(|f| format_name(f).to_owned())),
        };
        StageDoc { id: s.id, filter, file, format, action: s.action.name().to_owned(), to: s.action.to().map(str::to_owned) }
    }
}

impl StageSpec {
    /// Makes a relative filter file path relative to `base` (the config file's directory), so
    /// the stage means the same whatever the daemon's working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let FilterSpec::File { path, .. } = &mut self.filter
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    }
}

/// What a port does with a packet no terminal stage took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultAction {
    Drop,
    Reflect,
    /// To the named port (the forwarding peer).
    Forward(String),
}

impl DefaultAction {
    pub fn parse(action: &str, to: Option<&str>) -> Result<DefaultAction, SpecError> {
        match ActionSpec::parse(action, to)? {
            ActionSpec::Drop => Ok(DefaultAction::Drop),
            ActionSpec::Reflect => Ok(DefaultAction::Reflect),
            ActionSpec::Forward(to) => Ok(DefaultAction::Forward(to)),
            other => Err(bad("action", format!("`{}` cannot end a pipeline (expected drop, reflect or forward)", other.name()))),
        }
    }

    pub fn as_action(&self) -> ActionSpec {
        match self {
            DefaultAction::Drop => ActionSpec::Drop,
            DefaultAction::Reflect => ActionSpec::Reflect,
            DefaultAction::Forward(to) => ActionSpec::Forward(to.clone()),
        }
    }
}

impl fmt::Display for DefaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_action().fmt(f)
    }
}

/// A port's whole pipeline: stages in order, then the default action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSpec {
    pub stages: Vec<StageSpec>,
    pub default: DefaultAction,
}

impl PipelineSpec {
    /// No stages: every packet gets the default action (the dataplane of issue 2).
    pub fn empty(default: DefaultAction) -> PipelineSpec {
        PipelineSpec { stages: Vec::new(), default }
    }

    /// Checks what spans stages: ids are unique. Returns the first repeated id.
    pub fn check_ids(&self) -> Result<(), SpecError> {
        let mut seen = std::collections::HashSet::new();
        for s in &self.stages {
            if !seen.insert(s.id.as_str()) {
                return Err(bad("id", format!("stage id `{}` is used twice", s.id)));
            }
        }
        Ok(())
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.id == id)
    }
}

/// JSON/TOML shape of a whole pipeline: `stages`, `default` (drop, reflect, forward) and `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineDoc {
    #[serde(default)]
    pub stages: Vec<StageSpec>,
    pub default: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl TryFrom<PipelineDoc> for PipelineSpec {
    type Error = SpecError;

    fn try_from(doc: PipelineDoc) -> Result<PipelineSpec, SpecError> {
        let default = DefaultAction::parse(&doc.default, doc.to.as_deref())
            .map_err(|e| SpecError { key: if e.key == "action" { "default" } else { e.key }, reason: e.reason })?;
        let spec = PipelineSpec { stages: doc.stages, default };
        spec.check_ids()?;
        Ok(spec)
    }
}

impl From<&PipelineSpec> for PipelineDoc {
    fn from(p: &PipelineSpec) -> PipelineDoc {
        let d = p.default.as_action();
        PipelineDoc { stages: p.stages.clone(), default: d.name().to_owned(), to: d.to().map(str::to_owned) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(json: &str) -> Result<StageSpec, String> {
        serde_json::from_str::<StageSpec>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn stage_round_trips_through_json_and_toml() {
        let s = stage(r#"{"id":"dns","filter":"udp port 53","action":"forward","to":"b"}"#).unwrap();
        assert_eq!(s.action, ActionSpec::Forward("b".into()));
        assert_eq!(s.filter, FilterSpec::Text { text: "udp port 53".into(), format: Format::Tcpdump });
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"id":"dns","filter":"udp port 53","action":"forward","to":"b"}"#);
        let t: StageSpec = toml::from_str("id='x'\nfile='f.bpf'\nformat='asm'\naction='verdict'\n").unwrap();
        assert_eq!(t.filter, FilterSpec::File { path: "f.bpf".into(), format: Some(Format::Asm) });
        assert_eq!(toml::from_str::<StageSpec>(&toml::to_string(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn bad_stages_name_the_field() {
        let cases = [
            (r#"{"id":"","filter":"udp","action":"drop"}"#, "id: `` must be"),
            (r#"{"id":"a b","filter":"udp","action":"drop"}"#, "id: `a b` must be"),
            (r#"{"id":"a","filter":"udp","action":"explode"}"#, "action: unknown action `explode`"),
            (r#"{"id":"a","filter":"udp","action":"forward"}"#, "to: action \"forward\" needs `to`"),
            (r#"{"id":"a","filter":"udp","action":"drop","to":"b"}"#, "to: only valid with action \"forward\""),
            (r#"{"id":"a","action":"drop"}"#, "filter: a stage needs"),
            (r#"{"id":"a","filter":"x","file":"y","action":"drop"}"#, "file: give either"),
            (r#"{"id":"a","filter":"x","format":"elf","action":"drop"}"#, "format: unknown format `elf`"),
            (r#"{"id":"a","filter":"x","format":"bytes","action":"drop"}"#, "format: raw bytecode"),
            (r#"{"id":"a","filter":"x","action":"drop","extra":1}"#, "unknown field `extra`"),
        ];
        for (json, want) in cases {
            let e = stage(json).unwrap_err();
            assert!(e.contains(want), "{json}: got {e}");
        }
    }

    #[test]
    fn pipeline_doc_checks_default_and_ids() {
        let ok: PipelineDoc = serde_json::from_str(r#"{"stages":[{"id":"a","filter":"udp","action":"count"}],"default":"forward","to":"b"}"#).unwrap();
        let spec = PipelineSpec::try_from(ok.clone()).unwrap();
        assert_eq!(spec.default, DefaultAction::Forward("b".into()));
        assert_eq!(PipelineDoc::from(&spec), ok);
        let dup: PipelineDoc = serde_json::from_str(
            r#"{"stages":[{"id":"a","filter":"udp","action":"count"},{"id":"a","filter":"tcp","action":"drop"}],"default":"drop"}"#,
        )
        .unwrap();
        assert_eq!(PipelineSpec::try_from(dup).unwrap_err().to_string(), "id: stage id `a` is used twice");
        let e = DefaultAction::parse("sample", None).unwrap_err();
        assert!(e.to_string().contains("`sample` cannot end a pipeline"), "{e}");
    }

    #[test]
    fn relative_files_resolve_against_the_base() {
        let mut s = stage(r#"{"id":"a","file":"f/x.bpf","action":"drop"}"#).unwrap();
        s.resolve_paths(Path::new("/etc/sluice"));
        assert_eq!(s.filter, FilterSpec::File { path: "/etc/sluice/f/x.bpf".into(), format: None });
        let mut abs = stage(r#"{"id":"a","file":"/x.bpf","action":"drop"}"#).unwrap();
        abs.resolve_paths(Path::new("/etc"));
        assert_eq!(abs.filter, FilterSpec::File { path: "/x.bpf".into(), format: None });
    }
}
