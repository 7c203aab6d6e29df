//! `sluice fw …`: explain where a firewall's rules run, test packets against it, and load its
//! kernel part into the steering program of a running dataplane (and read the counters back).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use sluice::firewall::place::{self, Place};
use sluice::firewall::{Engine, FirewallConfig, Ruleset, describe, stats};
use sluice::steer::{self, firewall::FirewallMaps};

#[derive(Subcommand)]
pub enum FwCommand {
    /// Print each rule and where it runs (kernel or userspace) and why, per interface.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// Interfaces to explain for (default: every interface named by a rule, and the rest).
        #[arg(long = "interface", short)]
        interfaces: Vec<String>,
    },
    /// Show the rule and verdict for packets, in order, through one engine (so conntrack
    /// state carries from one packet to the next).
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// `tcp 10.0.0.1:1234 > 10.0.0.2:22 flags S`, `udp [fd00::1]:53 > [fd00::2]:99`,
        /// `icmp A > B type 8`, `proto 47 A > B`, options `vlan N`, `len N`; or hex bytes.
        #[arg(long = "packet", short, required = true)]
        packets: Vec<String>,
        /// Ingress interface of the packets.
        #[arg(long = "in", default_value = "")]
        ingress: String,
    },
    /// Load the kernel part of a firewall into the steering program attached to interfaces
    /// (for example by a running `sluice run`). A daemon with `[dataplane] firewall` manages
    /// its kernel stage itself (and rewrites it on reload): use `sluice ctl reload` there.
    Load {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "interface", short, required = true)]
        interfaces: Vec<String>,
    },
    /// Switch the kernel firewall stage of interfaces off.
    Unload {
        #[arg(long = "interface", short, required = true)]
        interfaces: Vec<String>,
    },
    /// Per-rule packet/byte counters of the kernel stage of interfaces (a daemon's own
    /// firewall, kernel and userspace merged: `sluice ctl fw stats`).
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long = "interface", short, required = true)]
        interfaces: Vec<String>,
    },
}

#[derive(Args)]
pub struct ConfigArg {
    /// Firewall rules (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

impl ConfigArg {
    fn ruleset(&self) -> Result<Ruleset> {
        let cfg = FirewallConfig::load(&self.config)?;
        Ok(Ruleset::new(cfg)?)
    }
}

pub fn run(cmd: &FwCommand) -> Result<()> {
    match cmd {
        FwCommand::Explain { config, interfaces } => explain(&config.ruleset()?, interfaces),
        FwCommand::Test { config, packets, ingress } => test(config.ruleset()?, packets, ingress),
        FwCommand::Load { config, interfaces } => {
            refuse_daemon_owned(interfaces)?;
            load(&config.ruleset()?, interfaces)
        }
        FwCommand::Unload { interfaces } => {
            refuse_daemon_owned(interfaces)?;
            for ifname in interfaces {
                FirewallMaps::of_attached(ifname)?.load(&Default::default())?;
                println!("{ifname}: kernel firewall off");
            }
            Ok(())
        }
        FwCommand::Stats { config, interfaces } => kernel_stats(&config.ruleset()?, interfaces),
    }
}

/// A daemon running its own firewall marks its steering programs (see `sluice::steer`): their
/// kernel stage follows that daemon's firewall file and is rewritten on its reloads, so a
/// load or unload here would be silently undone, or undo the daemon's rules.
fn refuse_daemon_owned(interfaces: &[String]) -> Result<()> {
    for ifname in interfaces {
        if steer::firewall_owned(ifname)? {
            bail!(
                "{ifname}: the steering program belongs to a running `sluice run` with its own firewall \
                 ([dataplane] firewall): edit that firewall file and run `sluice ctl reload` (or send it SIGHUP)"
            );
        }
    }
    Ok(())
}

fn explain(rs: &Ruleset, interfaces: &[String]) -> Result<()> {
    let cfg = rs.config();
    let mut targets: Vec<Option<&str>> = interfaces.iter().map(|i| Some(i.as_str())).collect();
    if targets.is_empty() {
        let mut named: Vec<&str> = cfg.rules.iter().flat_map(|r| r.ingress.iter().flatten()).map(String::as_str).collect();
        named.sort_unstable();
        named.dedup();
        targets = named.into_iter().map(Some).chain([None]).collect();
    }
    println!("{} rules, {} address sets, {} port sets, default {}", cfg.rules.len(), cfg.addr_sets.len(), cfg.port_sets.len(), cfg.default);
    for t in targets {
        print!("{}", place::explain(cfg, t));
    }
    Ok(())
}

fn test(rs: Ruleset, packets: &[String], ingress: &str) -> Result<()> {
    let rs = Arc::new(rs);
    let id = rs.ingress(ingress);
    let mut engine = Engine::new(Arc::clone(&rs), false);
    let placement = rs.placement(id).clone();
    for (n, text) in packets.iter().enumerate() {
        let mut frame = describe::frame(text)?;
        // One second apart, so timeouts behave as for packets sent by hand.
        let d = engine.classify(&mut frame, id, n as u64 * 1_000_000_000);
        let (what, place) = match d.rule {
            Some(i) => {
                let r = rs.rule(i);
                (format!("rule {} `{}` (line {})", i + 1, r.name, r.line), placement.places[i].clone())
            }
            None => (
                "default policy".to_owned(),
                if placement.kernel_default { Place::Kernel } else { Place::Userspace("default policy".into()) },
            ),
        };
        let where_ = match place {
            Place::Kernel => "kernel",
            _ => "userspace",
        };
        let sampled = if d.sampled { ", sampled" } else { "" };
        println!("{text}\n  -> {}{sampled}: {what}, decided in {where_}", d.verdict);
    }
    Ok(())
}

fn load(rs: &Ruleset, interfaces: &[String]) -> Result<()> {
    for ifname in interfaces {
        let placement = place::place(rs.config(), Some(ifname));
        let tables = place::kernel_tables(rs.config(), &placement);
        let mut maps = FirewallMaps::of_attached(ifname)?;
        maps.load(&tables).with_context(|| format!("load firewall into {ifname}"))?;
        println!(
            "{ifname}: {} kernel rules, {} IPv4 and {} IPv6 prefixes, {} port sets, unmatched frames {}",
            tables.rules.len(),
            tables.v4.len(),
            tables.v6.len(),
            tables.port_sets.len(),
            if tables.fallback_drop { "dropped" } else { "to userspace" }
        );
    }
    Ok(())
}

fn kernel_stats(rs: &Ruleset, interfaces: &[String]) -> Result<()> {
    let mut kernel = Vec::new();
    for ifname in interfaces {
        let placement = place::place(rs.config(), Some(ifname));
        let n = placement.kernel_rules().count();
        kernel.push((ifname.clone(), FirewallMaps::of_attached(ifname)?.counters(n)?));
    }
    println!("{:<24} {:>14} {:>16}", "rule", "packets", "bytes");
    for r in stats::merge(rs, &kernel, std::iter::empty()) {
        let t = r.total();
        println!("{:<24} {:>14} {:>16}", r.name, t.packets, t.bytes);
    }
    Ok(())
}
