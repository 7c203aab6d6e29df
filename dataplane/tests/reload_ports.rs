//! A config reload that adds and removes ports, under traffic: client —veth— dut (`sluice run`,
//! ports a ↔ b) —veth— server, plus a spare veth pair inside the dut (`dut-c0`/`dut-c1`).
//!
//! While a sender streams numbered datagrams client → server through a ↔ b, a reload adds
//! port c (on dut-c0, dropping): its steering program appears and it drops what is sent into
//! dut-c1; a reload then removes it: its XDP program is gone, and adding it once more binds
//! the same queue again, which only works if its socket was closed. A reload
//! naming an interface that does not exist is refused with the interface's name and changes
//! nothing, as is one changing settings that apply only at start. Two single ports turned into a forwarding pair get one worker for the pair in
//! place of theirs. Through all of it the a ↔ b pair loses no datagram and its counters only
//! grow.
//!
//! Privileged: skips with a message when not root, must run under `CI=true`. Namespaces,
//! files and the daemon are removed on every exit path (Drop guards).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::testbed::netns::{Topology, TopologyOpts, privileged};

mod daemon;

use daemon::{Files, Listener, Sluice, client_frame, ctl, while_sending};

const PORT: u16 = 7100;
/// Where the frames sent into port c go.
const C_PORT: u16 = 7101;

/// Userspace rules (tcpdump matches) counting each stream, so the counts of the a ↔ b worker
/// (kept, but renumbered when c comes first) and of c's workers (stopped) can be checked.
const RULES: &str = r#"
[firewall]
default = "accept"
[[rule]]
name = "seq"
match = "udp dst port 7100"
action = "accept"
[[rule]]
name = "to-c"
match = "udp dst port 7101"
action = "accept"
"#;

/// (port, interface, queue) → (rx, drop) from `sluice ctl --json stats`.
fn queues(topo: &Topology, socket: &Path) -> Vec<(String, String, u64, u64)> {
    let (ok, out, err) = ctl(topo, socket, &["--json", "stats"]);
    assert!(ok, "ctl stats: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("stats json");
    v["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| {
            let n = |k: &str| q["counters"][k].as_u64().expect("counter");
            (q["port"].as_str().expect("port").to_owned(), q["interface"].as_str().expect("if").to_owned(), n("rx"), n("drop"))
        })
        .collect()
}

fn rx_of(q: &[(String, String, u64, u64)], port: &str) -> u64 {
    q.iter().find(|x| x.0 == port).unwrap_or_else(|| panic!("no port {port} in {q:?}")).2
}

fn xdp_prog(topo: &Topology, ifname: &str) -> Option<u32> {
    topo.dut.run_in(|| sluice::steer::attached_xdp_prog(ifname)).expect("enter dut").expect("query xdp")
}

/// Ports `extra` first (so adding them renumbers a and b and their worker), then a ↔ b.
fn config(socket: &Path, extra: &str) -> String {
    format!(
        "[control]\nsocket = \"{}\"\n[dataplane]\ncores = [0]\nfirewall = \"fw.toml\"\n{extra}\
         [[port]]\nname = \"a\"\ninterface = \"dut-a0\"\naction = \"forward\"\nforward_to = \"b\"\n\
         [[port]]\nname = \"b\"\ninterface = \"dut-b0\"\naction = \"forward\"\nforward_to = \"a\"\n",
        socket.display()
    )
}

/// Per rule, kernel plus userspace packets from `sluice ctl --json fw stats`.
fn fw_packets(topo: &Topology, socket: &Path, rule: &str) -> u64 {
    let (ok, out, err) = ctl(topo, socket, &["--json", "fw", "stats"]);
    assert!(ok, "ctl fw stats: {err}");
    let v: Value = serde_json::from_str(out.trim()).expect("fw stats json");
    let r = v["rules"].as_array().and_then(|a| a.iter().find(|r| r["rule"] == rule)).unwrap_or_else(|| panic!("rule {rule} in {v}"));
    r["kernel_packets"].as_u64().expect("kernel") + r["user_packets"].as_u64().expect("user")
}

#[test]
fn reload_adds_and_removes_ports_while_the_others_run_on() {
    if !privileged("reload_adds_and_removes_ports_while_the_others_run_on") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "rlp".into(), ..TopologyOpts::default() }).expect("topology");
    // The spare pair lives and dies with the dut namespace.
    topo.dut
        .ip(&["link", "add", "dut-c0", "numrxqueues", "1", "numtxqueues", "1", "type", "veth", "peer", "name", "dut-c1", "numrxqueues", "1", "numtxqueues", "1"])
        .expect("add spare veth");
    for ifname in ["dut-c0", "dut-c1"] {
        topo.dut.ip(&["link", "set", ifname, "up"]).expect("spare veth up");
    }
    let files = Files::new("reload-ports");
    files.write("fw.toml", RULES);
    let socket = files.0.join("ctl.sock");
    let path = files.write("sluice.toml", &config(&socket, ""));
    let (client, server) = (topo.client_if.addr.expect("client addr"), topo.server_if.addr.expect("server addr"));

    let received = Listener::start(&topo.server, SocketAddrV4::new(server, PORT));

    let sluice = Sluice::start(&topo, &path);
    assert!(xdp_prog(&topo, "dut-c0").is_none());

    let sent = while_sending(&topo, 300, |n| client_frame(client, server, PORT, n), || received.get(), |sent| {
        while sent.load(Ordering::Relaxed) < 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = queues(&topo, &socket);

        // Add port c on the spare veth, remove it, and do it again: the second bind of
        // dut-c0's queue succeeds only if the first socket was closed.
        for round in 0..2 {
            files.write("sluice.toml", &config(&socket, "[[port]]\nname = \"c\"\ninterface = \"dut-c0\"\naction = \"drop\"\n"));
            let (ok, out, err) = ctl(&topo, &socket, &["reload"]);
            assert!(ok, "round {round}: adding a port was refused: {err}");
            assert!(out.contains("port c: added") && out.contains("dut-c0"), "{out}");
            assert!(xdp_prog(&topo, "dut-c0").is_some(), "no steering program on the new port");
            topo.dut
                .run_in(|| {
                    let mut cap = pcap::Capture::from_device("dut-c1").and_then(|c| c.timeout(50).open()).expect("open dut-c1");
                    for i in 0..50 {
                        cap.sendpacket(client_frame(client, Ipv4Addr::new(192, 0, 2, 1), C_PORT, i)).expect("send into c");
                    }
                })
                .expect("enter dut");
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let q = queues(&topo, &socket);
                let c = q.iter().find(|x| x.0 == "c").cloned().expect("port c counters");
                if c.2 >= 50 && c.3 >= 50 {
                    assert!(rx_of(&q, "a") >= rx_of(&before, "a"), "port a's counters restarted: {before:?} -> {q:?}");
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: port c did not drop what it received: {q:?}");
                std::thread::sleep(Duration::from_millis(20));
            }

            files.write("sluice.toml", &config(&socket, ""));
            let (ok, out, err) = ctl(&topo, &socket, &["reload"]);
            assert!(ok, "round {round}: removing a port was refused: {err}");
            assert!(out.contains("port c: removed") && out.contains("interface dut-c0: steering detached"), "{out}");
            assert!(xdp_prog(&topo, "dut-c0").is_none(), "the removed port's steering program stayed");
            assert!(!queues(&topo, &socket).iter().any(|x| x.0 == "c"));
        }

        // A port on an interface that does not exist: refused, nothing changes.
        files.write("sluice.toml", &config(&socket, "[[port]]\nname = \"d\"\ninterface = \"dut-nope0\"\naction = \"drop\"\n"));
        let (ok, _, err) = ctl(&topo, &socket, &["reload"]);
        assert!(!ok && err.contains("dut-nope0"), "a missing interface was accepted or not named: {err}");
        let (ok, status, _) = ctl(&topo, &socket, &["--json", "status"]);
        assert!(ok);
        let v: Value = serde_json::from_str(status.trim()).expect("status json");
        let names: Vec<&str> = v["ports"].as_array().expect("ports").iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(xdp_prog(&topo, "dut-a0").is_some() && xdp_prog(&topo, "dut-b0").is_some());

        // UMEM geometry and zero-copy mode apply only at start: refused, naming the keys.
        files.write("sluice.toml", &config(&socket, "").replace("cores = [0]\n", "cores = [0]\nframe_count = 8192\nzero_copy = \"off\"\n"));
        let (ok, _, err) = ctl(&topo, &socket, &["reload"]);
        assert!(!ok && err.contains("dataplane.frame_count, dataplane.zero_copy changed"), "{err}");

        // Two single ports, then the same two as a forwarding pair: their workers are
        // replaced by one for the pair (each old one holds a queue the new one binds).
        let single = "[[port]]\nname = \"c\"\ninterface = \"dut-c0\"\naction = \"drop\"\n\
                      [[port]]\nname = \"d\"\ninterface = \"dut-c1\"\naction = \"drop\"\n";
        files.write("sluice.toml", &config(&socket, single));
        let (ok, out, err) = ctl(&topo, &socket, &["reload"]);
        assert!(ok && out.contains("port c: added") && out.contains("port d: added"), "{out}{err}");
        let pair = "[[port]]\nname = \"c\"\ninterface = \"dut-c0\"\naction = \"forward\"\nforward_to = \"d\"\n\
                    [[port]]\nname = \"d\"\ninterface = \"dut-c1\"\naction = \"forward\"\nforward_to = \"c\"\n";
        files.write("sluice.toml", &config(&socket, pair));
        let (ok, out, err) = ctl(&topo, &socket, &["reload"]);
        assert!(ok, "pairing two ports was refused: {err}");
        assert!(out.contains("worker stopped for c q0") && out.contains("worker stopped for d q0"), "{out}");
        assert!(out.contains("worker started for c (dut-c0 q0) + d (dut-c1 q0)"), "{out}");
        assert!(!out.contains("worker started for a") && !out.contains("worker stopped for a"), "the a ↔ b worker was touched: {out}");
        let (ok, status, _) = ctl(&topo, &socket, &["--json", "status"]);
        let v: Value = serde_json::from_str(status.trim()).expect("status json");
        assert!(ok && v["workers"] == 2, "{status}");
        files.write("sluice.toml", &config(&socket, ""));
        let (ok, out, err) = ctl(&topo, &socket, &["reload"]);
        assert!(ok && out.contains("port c: removed") && out.contains("port d: removed"), "{out}{err}");

        let now = sent.load(Ordering::Relaxed);
        while sent.load(Ordering::Relaxed) < now + 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert_eq!(received.wait_for(sent, Duration::from_secs(5)), sent, "datagrams lost through a ↔ b across the reloads");
    // The kept worker's firewall counts continued through renumbering; the stopped workers'
    // counts were kept.
    assert_eq!(fw_packets(&topo, &socket, "seq"), u64::from(sent));
    assert_eq!(fw_packets(&topo, &socket, "to-c"), 100);
    sluice.stop();
}
