//! Which worker serves which sockets: a pure function of the config, tested without root.
//!
//! A worker owns one UMEM and every socket that frames can move between without a copy: a
//! forwarding pair's two ports at one queue index, or a single drop/reflect port's queue. So a
//! frame never crosses threads, and each worker's frame accounting is closed.

use crate::config::{Config, PortAction};

/// One socket: a port's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPlan {
    /// Index into `Config::ports`.
    pub port: usize,
    pub interface: String,
    pub queue: u32,
    pub action: SocketAction,
}

/// The action with the peer resolved to a socket index inside the same worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAction {
    Drop,
    Reflect,
    Forward(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    pub core: usize,
    pub sockets: Vec<SocketPlan>,
}

pub fn plan(config: &Config) -> Vec<WorkerPlan> {
    let mut workers: Vec<WorkerPlan> = Vec::new();
    for (pi, port) in config.ports.iter().enumerate() {
        for &queue in &port.queues {
            let socket = |port: usize, action| SocketPlan {
                port,
                interface: config.ports[port].interface.clone(),
                queue,
                action,
            };
            let sockets = match &port.action {
                PortAction::Drop => vec![socket(pi, SocketAction::Drop)],
                PortAction::Reflect => vec![socket(pi, SocketAction::Reflect)],
                PortAction::Forward(peer) => {
                    let peer = config.ports.iter().position(|p| &p.name == peer).expect("validated peer");
                    // The pair is planned once, from its lower-indexed port.
                    if peer < pi {
                        continue;
                    }
                    vec![socket(pi, SocketAction::Forward(1)), socket(peer, SocketAction::Forward(0))]
                }
            };
            let cores = &config.dataplane.cores;
            workers.push(WorkerPlan { core: cores[workers.len() % cores.len()], sockets });
        }
    }
    workers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn forwarding_pair_shares_one_worker_per_queue() {
        let c = config(
            "[dataplane]\ncores=[0]\n\
             [[port]]\nname='a'\ninterface='x'\nqueues=[0,1]\naction='forward'\nforward_to='b'\n\
             [[port]]\nname='b'\ninterface='y'\nqueues=[1,0]\naction='forward'\nforward_to='a'\n",
        );
        let w = plan(&c);
        assert_eq!(w.len(), 2);
        for (wi, q) in [(0, 0), (1, 1)] {
            let s = &w[wi].sockets;
            assert_eq!((s[0].interface.as_str(), s[0].queue, s[0].action), ("x", q, SocketAction::Forward(1)));
            assert_eq!((s[1].interface.as_str(), s[1].queue, s[1].action), ("y", q, SocketAction::Forward(0)));
        }
    }

    #[test]
    fn single_ports_get_a_worker_each_round_robin_over_cores() {
        let c = config(
            "[dataplane]\ncores=[1,0]\n\
             [[port]]\nname='a'\ninterface='x'\nqueues=[0,1]\naction='drop'\n\
             [[port]]\nname='b'\ninterface='y'\naction='reflect'\n",
        );
        let w = plan(&c);
        assert_eq!(w.iter().map(|w| w.core).collect::<Vec<_>>(), vec![1, 0, 1]);
        assert_eq!(w[2].sockets[0].action, SocketAction::Reflect);
        assert!(w.iter().all(|w| w.sockets.len() == 1));
    }
}
