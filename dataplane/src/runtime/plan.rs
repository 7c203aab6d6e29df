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
    /// The forwarding peer's socket index inside the same worker.
    pub peer: Option<usize>,
    /// The worker's counter block in the port's pipelines: the queue's position in the port's
    /// queue list, so every worker of a port has its own.
    pub slot: usize,
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
            let socket = |port: usize, peer| SocketPlan {
                port,
                interface: config.ports[port].interface.clone(),
                queue,
                peer,
                slot: config.ports[port].queues.iter().position(|&q| q == queue).expect("queue of the pair"),
            };
            let sockets = match &port.action {
                PortAction::Drop | PortAction::Reflect => vec![socket(pi, None)],
                PortAction::Forward(peer) => {
                    let peer = config.ports.iter().position(|p| &p.name == peer).expect("validated peer");
                    // The pair is planned once, from its lower-indexed port.
                    if peer < pi {
                        continue;
                    }
                    vec![socket(pi, Some(1)), socket(peer, Some(0))]
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
            assert_eq!((s[0].interface.as_str(), s[0].queue, s[0].peer, s[0].slot), ("x", q, Some(1), q as usize));
            // Port b lists its queues as [1, 0]: its counter blocks follow that order.
            assert_eq!((s[1].interface.as_str(), s[1].queue, s[1].peer, s[1].slot), ("y", q, Some(0), 1 - q as usize));
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
        assert_eq!((w[2].sockets[0].port, w[2].sockets[0].peer), (1, None));
        assert_eq!(w.iter().map(|w| w.sockets[0].slot).collect::<Vec<_>>(), vec![0, 1, 0]);
        assert!(w.iter().all(|w| w.sockets.len() == 1));
    }
}
