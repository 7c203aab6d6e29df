//! Per-rule counters merged from the kernel stage of every interface and the userspace engine
//! of every worker: what `sluice ctl fw stats` and the metrics endpoint report.

use super::engine::{Counter, Ruleset};
use crate::steer::firewall::FwCounter;

/// One rule's (or the default policy's) totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    /// The rule's name, or `default` for the default policy.
    pub name: String,
    /// Counted in the steering programs (before AF_XDP).
    pub kernel: Counter,
    /// Counted by the userspace engines.
    pub user: Counter,
}

impl RuleStats {
    pub fn total(&self) -> Counter {
        Counter {
            packets: self.kernel.packets + self.user.packets,
            bytes: self.kernel.bytes + self.user.bytes,
        }
    }
}

/// Merges `kernel` (per interface: its name and the counters `FirewallMaps::counters` read for
/// the kernel rules of that interface's placement) with the engines' counters. The result has
/// one entry per rule, then the default policy.
pub fn merge<'a>(
    rules: &Ruleset,
    kernel: &[(String, Vec<FwCounter>)],
    engines: impl IntoIterator<Item = &'a [Counter]>,
) -> Vec<RuleStats> {
    let n = rules.len();
    let mut out: Vec<RuleStats> = (0..n)
        .map(|i| rules.rule(i).name.clone())
        .chain(["default".to_owned()])
        .map(|name| RuleStats { name, kernel: Counter::default(), user: Counter::default() })
        .collect();
    for (ifname, slots) in kernel {
        let placement = rules.placement(rules.ingress(ifname));
        let targets = placement.kernel_rules().chain(placement.kernel_default.then_some(n));
        // The last slot read is always the fallback's; the rule slots come first, in order.
        let (rule_slots, fallback) = slots.split_at(slots.len().saturating_sub(1));
        for (target, c) in targets.zip(rule_slots.iter().chain(fallback)) {
            let k = &mut out[target].kernel;
            k.packets += c.packets;
            k.bytes += c.bytes;
        }
    }
    for counters in engines {
        for (o, c) in out.iter_mut().zip(counters) {
            o.user.packets += c.packets;
            o.user.bytes += c.bytes;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::FirewallConfig;
    use std::path::Path;

    #[test]
    fn kernel_slots_map_back_to_their_rules() {
        let text = "[firewall]\ndefault = \"drop\"\n\
                    [[rule]]\nname = \"a\"\nin = \"eth1\"\naction = \"count\"\n\
                    [[rule]]\nname = \"b\"\nproto = \"udp\"\naction = \"drop\"\n";
        let rs = Ruleset::new(FirewallConfig::parse(text, Path::new("t")).unwrap()).unwrap();
        let c = |p| FwCounter { packets: p, bytes: p * 100 };
        // eth1 runs a, b and the default in the kernel; eth0 only b and the default.
        let kernel = vec![("eth1".to_owned(), vec![c(1), c(2), c(3)]), ("eth0".to_owned(), vec![c(10), c(20)])];
        let user = [Counter { packets: 5, bytes: 5 }; 3];
        let s = merge(&rs, &kernel, [&user[..]]);
        assert_eq!(s.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b", "default"]);
        assert_eq!(s.iter().map(|r| r.kernel.packets).collect::<Vec<_>>(), [1, 12, 23]);
        assert_eq!(s[2].total(), Counter { packets: 28, bytes: 2305 });
    }
}
