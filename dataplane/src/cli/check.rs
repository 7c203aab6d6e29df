//! `sluice check --config FILE`: validates a config and every filter in it, and resolves its
//! `user`/`group`, without touching any interface. Bad input exits with status 2, like `run`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use sluice::config::{Config, ConfigError, PortAction};
use sluice::pipeline::Pipeline;
use sluice::privdrop;
use sluice::runtime::{FirewallError, load_ruleset};

#[derive(Args)]
pub struct CheckArgs {
    /// Appliance configuration (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: &CheckArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let d = &config.daemon;
    let identity = match &d.user {
        None => None,
        Some(user) => match privdrop::resolve(user, d.group.as_deref()) {
            Ok(id) => Some(id),
            Err(e) if e.is_config() => {
                let key = if matches!(e, privdrop::PrivError::NoGroup(_)) { "group" } else { "user" };
                return Err(ConfigError::Invalid { file: args.config.clone(), key: key.into(), reason: e.to_string() }.into());
            }
            Err(e) => return Err(e.into()),
        },
    };

    // Loading ran every filter's front end and verifier; the JIT is what `run` adds, so it
    // runs here too: a config that passes `check` starts.
    let mut lines = Vec::new();
    for (i, p) in config.ports.iter().enumerate() {
        let pipeline = Pipeline::compile(&p.pipeline(), &p.env()).map_err(|e| {
            let key = match e.stage_id().and_then(|id| p.stages.iter().position(|s| s.id == id)) {
                Some(j) => format!("port[{i}].stage[{j}]"),
                None => format!("port[{i}].stage"),
            };
            ConfigError::Invalid { file: args.config.clone(), key, reason: e.to_string() }
        })?;
        let queues: Vec<String> = p.queues.iter().map(u32::to_string).collect();
        lines.push(format!(
            "port {} on {} queues {}: {} stage(s), default {}, {} bytes of native code",
            p.name,
            p.interface,
            queues.join(","),
            p.stages.len(),
            action_name(&p.action),
            pipeline.code_size()
        ));
    }
    // The firewall file too, with its tcpdump matches through the JIT; its errors carry the
    // firewall file's line and column.
    if let Some(path) = &config.dataplane.firewall {
        let rules = load_ruleset(path).map_err(|e| -> anyhow::Error {
            match e {
                FirewallError::Config(_) | FirewallError::Compile { .. } => {
                    ConfigError::Invalid { file: args.config.clone(), key: "dataplane.firewall".into(), reason: e.to_string() }.into()
                }
                FirewallError::Kernel(_) => e.into(),
            }
        })?;
        let mut interfaces: Vec<&str> = config.ports.iter().map(|p| p.interface.as_str()).collect();
        interfaces.sort_unstable();
        interfaces.dedup();
        let kernel: Vec<String> = interfaces
            .iter()
            .map(|i| format!("{} on {i}", rules.placement(rules.ingress(i)).kernel_rules().count()))
            .collect();
        lines.push(format!(
            "firewall {}: {} rule(s), default {}; in the kernel: {}",
            path.display(),
            rules.len(),
            rules.config().default,
            kernel.join(", ")
        ));
    }
    println!("{}: valid", args.config.display());
    for l in &lines {
        println!("{l}");
    }
    match &d.control_socket {
        Some(s) => println!("control socket: {}", s.display()),
        None => println!("control socket: none ([control] socket not set)"),
    }
    match &d.metrics_listen {
        Some(a) => println!("metrics: http://{a}/metrics"),
        None => println!("metrics: off ([metrics] listen not set)"),
    }
    if let Some(id) = identity {
        println!("runs as: {id} after setup");
    }
    Ok(())
}

fn action_name(a: &PortAction) -> String {
    match a {
        PortAction::Drop => "drop".into(),
        PortAction::Reflect => "reflect".into(),
        PortAction::Forward(to) => format!("forward:{to}"),
    }
}
