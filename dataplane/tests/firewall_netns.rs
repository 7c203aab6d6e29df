//! The kernel firewall on live traffic: client —veth— dut (`sluice run`, ports a ↔ b) —veth—
//! server, with the firewall's kernel part loaded into the running dataplane's steering
//! program by `sluice fw load`. Blocked traffic never reaches the server, allowed traffic does,
//! a 100,000-entry blocklist loads and then blocks, and `sluice fw stats` counts each rule.
//!
//! Privileged: skips with a message when not root, must run under `CI=true`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use sluice::testbed::netns::{Topology, TopologyOpts, privileged};

mod daemon;

use daemon::{Files, Listener, SLUICE, Sluice, client_frame};

const OPEN_PORT: u16 = 7000;
const CLOSED_PORT: u16 = 7001;
const BLOCKLIST: usize = 100_000;

/// Runs `sluice fw …` in the dut namespace; returns stdout, panics with stderr on failure.
fn fw(topo: &Topology, args: &[&str]) -> String {
    let out = topo.dut.exec([SLUICE, "fw"]).args(args).output().expect("run sluice fw");
    assert!(out.status.success(), "sluice fw {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Raw UDP frames (complete checksums) from the client to the server through AF_PACKET, in
/// bursts of 32 to each port, waiting after each burst until the open port saw it.
fn send(topo: &Topology, per_port: u32, open: &Listener, expect_open: bool) {
    let src = topo.client_if.addr.expect("client addr");
    let dst = topo.server_if.addr.expect("server addr");
    let frame = |dport: u16, seq: u32| client_frame(src, dst, dport, seq);
    topo.client
        .run_in(|| {
            let mut cap = pcap::Capture::from_device(topo.client_if.name.as_str())
                .and_then(|c| c.timeout(50).open())
                .expect("open AF_PACKET on the client");
            let base = open.get();
            for i in 0..per_port {
                cap.sendpacket(frame(OPEN_PORT, i)).expect("send");
                cap.sendpacket(frame(CLOSED_PORT, i)).expect("send");
                if expect_open && i % 32 == 31 {
                    open.wait_for(base + i + 1 - 32, Duration::from_millis(500));
                }
            }
        })
        .expect("enter client");
}

fn blocklist(extra: Option<Ipv4Addr>) -> String {
    // 100k distinct hosts in 100.64.0.0/10, none of them the client's.
    let mut text = String::with_capacity(BLOCKLIST * 16);
    for i in 0..BLOCKLIST as u32 {
        let host = 0x6440_0000 | (i.wrapping_mul(2_654_435_761) & 0x003f_ffff);
        text.push_str(&format!("{}\n", Ipv4Addr::from(host)));
    }
    if let Some(a) = extra {
        text.push_str(&format!("{a}\n"));
    }
    text
}

/// The packet count `sluice fw stats` reports for a rule.
fn stat(table: &str, rule: &str) -> u64 {
    table
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(rule)).then(|| f.next().and_then(|n| n.parse().ok())).flatten()
        })
        .unwrap_or_else(|| panic!("no rule {rule} in:\n{table}"))
}

const RULES: &str = r#"
[firewall]
default = "accept"
[set.big]
file = "big.txt"
[[rule]]
name = "big"
src = "@big"
action = "drop"
[[rule]]
name = "closed-port"
proto = "udp"
dport = 7001
action = "drop"
[[rule]]
name = "open-port"
proto = "udp"
dport = 7000
action = "accept"
"#;

const DATAPLANE: &str = r#"
[dataplane]
cores = [0]
pass_local = true
[[port]]
name = "a"
interface = "dut-a0"
action = "forward"
forward_to = "b"
[[port]]
name = "b"
interface = "dut-b0"
action = "forward"
forward_to = "a"
"#;

#[test]
fn kernel_rules_block_and_allow_live_traffic_with_a_100k_blocklist() {
    if !privileged("kernel_rules_block_and_allow_live_traffic_with_a_100k_blocklist") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "fwn".into(), ..TopologyOpts::default() }).expect("topology");
    let files = Files::new("fwtest");
    let server = topo.server_if.addr.expect("server addr");
    let open = Listener::start(&topo.server, SocketAddrV4::new(server, OPEN_PORT));
    let closed = Listener::start(&topo.server, SocketAddrV4::new(server, CLOSED_PORT));
    let sluice = Sluice::start(&topo, &files.write("sluice.toml", DATAPLANE));

    // Phase 1: the blocklist does not hold the client; the closed port is blocked.
    files.write("big.txt", &blocklist(None));
    let rules = files.write("fw.toml", RULES);
    let rules = rules.to_str().expect("utf-8 path");
    let t0 = Instant::now();
    let loaded = fw(&topo, &["load", "--config", rules, "--interface", "dut-a0"]);
    let load_time = t0.elapsed();
    assert!(loaded.contains("3 kernel rules, 100000 IPv4"), "{loaded}");
    send(&topo, 1000, &open, true);
    assert_eq!(open.wait_for(1000, Duration::from_secs(5)), 1000, "allowed traffic lost");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(closed.get(), 0, "blocked traffic reached the server");
    let stats = fw(&topo, &["stats", "--config", rules, "--interface", "dut-a0"]);
    assert_eq!((stat(&stats, "closed-port"), stat(&stats, "open-port"), stat(&stats, "big")), (1000, 1000, 0), "{stats}");

    // Phase 2: the client joins the 100k blocklist; nothing gets through any more.
    files.write("big.txt", &blocklist(topo.client_if.addr));
    fw(&topo, &["load", "--config", rules, "--interface", "dut-a0"]);
    let before = open.get();
    send(&topo, 300, &open, false);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((open.get() - before, closed.get()), (0, 0), "blocklisted traffic reached the server");
    let stats = fw(&topo, &["stats", "--config", rules, "--interface", "dut-a0"]);
    assert_eq!(stat(&stats, "big"), 600, "{stats}");

    // Off again: traffic flows.
    fw(&topo, &["unload", "--interface", "dut-a0"]);
    let before = open.get();
    send(&topo, 100, &open, true);
    assert_eq!(open.wait_for(before + 100, Duration::from_secs(5)) - before, 100);
    assert_eq!(closed.wait_for(100, Duration::from_secs(5)), 100);
    sluice.stop();
    eprintln!("100k-entry blocklist loaded in {load_time:?}");
}
