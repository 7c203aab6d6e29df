//! Network namespaces and the three-namespace veth topology every privileged test, bench and
//! demo uses: `client` —veth— `dut` (ports a and b) —veth— `server`.
//!
//! Everything is driven through iproute2 (`ip`), which keeps each step obviously correct and
//! easy to reproduce by hand. Namespace names are unique per process and per call (pid +
//! counter + tag), so tests run in parallel; interfaces are created directly inside their
//! namespaces, so their (fixed, short) names never collide in the root namespace. A [`Netns`]
//! deletes itself on Drop — on every exit path, panics included — and deleting a namespace
//! destroys the veths in it.

use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A failure while building or using a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("open namespace {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("enter namespace {ns}: setns: {source}")]
    Setns {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("spawn thread for namespace {ns}: {source}")]
    Thread {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parse `{cmd}` output: {reason}")]
    Parse { cmd: String, reason: String },
    #[error("interface name {name:?} is longer than 15 bytes")]
    IfName { name: String },
}

/// Distinguishes namespaces created by the same process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on Drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `sl<pid>-<n><tag>` with its loopback up.
    pub fn new(tag: &str) -> Result<Self, NetnsError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("sl{}-{}{}", std::process::id(), id, tag);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on, Drop removes the namespace even if a later step fails.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `args` inside the namespace (`ip netns exec <ns> args...`); the
    /// caller adds stdio and spawns it.
    pub fn exec<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `ip -n <ns> args...` and fails with its stderr if it fails.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets a sysctl inside the namespace (`key` in dotted form, e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        run(&mut self.exec(["sysctl", "-qw", &format!("{key}={value}")])).map(|_| ())
    }

    /// The interface index of `ifname` inside the namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32, NetnsError> {
        let out = self.ip(&["-j", "link", "show", "dev", ifname])?;
        link_field(&out, "ifindex")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| NetnsError::Parse {
                cmd: format!("ip -n {} -j link show dev {ifname}", self.name),
                reason: "no ifindex".into(),
            })
    }

    /// Runs `f` on a fresh thread that first entered this namespace with setns(CLONE_NEWNET):
    /// sockets and interface lookups made by `f` belong to the namespace. A panic in `f` is
    /// propagated to the caller.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| NetnsError::Open { path, source })?;
        let ns = self.name.as_str();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{ns}"))
                .spawn_scoped(scope, move || {
                    // SAFETY: setns only reads the fd, which `file` keeps open for the call;
                    // it changes the namespace of this (short-lived, dedicated) thread only.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(NetnsError::Setns {
                            ns: ns.to_string(),
                            source: std::io::Error::last_os_error(),
                        });
                    }
                    drop(file);
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread {
                    ns: ns.to_string(),
                    source,
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: Drop cannot fail, and a failure here leaves a name that the
        // teardown test would catch.
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: {e}");
        }
    }
}

/// Runs a command to completion; its stdout on success, its stderr in the error otherwise.
fn run(cmd: &mut Command) -> Result<String, NetnsError> {
    let text = format!("{cmd:?}").replace('"', "");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            cmd: text.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd: text,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A field of the single link in `ip -j link show dev X` output.
fn link_field(json: &str, key: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get(0)?.get(key).cloned()
}

/// Whether a root-only test may run: true as root; false (with a printed notice) otherwise,
/// except under `CI=true`, where a privileged test must not silently skip, so it panics.
pub fn privileged(test: &str) -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: privileged test must run as root under CI=true"
    );
    // Straight to stderr, not eprintln!: the test harness captures (and hides) the output of
    // passing tests, and a skip must be visible.
    let _ = writeln!(std::io::stderr(), "{test}: skipped (privileged test, needs root)");
    false
}

/// The effective uid, from /proc (keeps this module free of unsafe beyond setns).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Formats a MAC address the way iproute2 expects it.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How to build a [`Topology`].
#[derive(Debug, Clone)]
pub struct TopologyOpts {
    /// Appended to the namespace names to tell tests apart in `ip netns list`.
    pub tag: String,
    /// RX and TX queues of every veth (native XDP on veth needs rx queues ≥ the peer's tx
    /// queues, so both are set alike).
    pub queues: u32,
    /// MTU of every veth; 1500 fits native XDP on veth (which needs a frame in one page).
    pub mtu: u32,
    /// Give the dut ports their own addresses (`.3` on a, `.4` on b) for ARP/ping tests.
    pub dut_addrs: bool,
    /// First three octets of the /24 shared by client, server and dut ports.
    pub subnet: [u8; 3],
    /// Keep IPv6 enabled; off by default so router solicitations and MLD reports don't add
    /// stray frames to packet counts.
    pub ipv6: bool,
}

impl Default for TopologyOpts {
    fn default() -> Self {
        TopologyOpts {
            tag: String::new(),
            queues: 1,
            mtu: 1500,
            dut_addrs: true,
            subnet: [10, 77, 0],
            ipv6: false,
        }
    }
}

/// One end of a veth in a topology.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Interface name inside its namespace.
    pub name: String,
    /// Interface index inside its namespace.
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The interface's IPv4 address, if it has one.
    pub addr: Option<Ipv4Addr>,
}

/// `client` —veth— `dut` port a | port b —veth— `server`, one /24, static neighbour entries
/// so client and server talk through a bump-in-the-wire dut without ARP crossing it. With no
/// dataplane running the dut forwards nothing (IP forwarding off, frames are for other MACs).
///
/// Traffic through an AF_XDP dataplane should be raw frames with complete checksums (as the
/// tests send them) or ICMP: TCP/UDP sent by the client's or server's kernel leaves the L4
/// checksum to veth's virtual offload, XDP and AF_XDP copy mode pass it on unresolved, and
/// the far end then drops every segment as a checksum error (`ethtool -K cli0 tx off` on
/// the sending side avoids it).
#[derive(Debug)]
pub struct Topology {
    pub client: Netns,
    pub dut: Netns,
    pub server: Netns,
    /// The client's interface (`cli0`, `<subnet>.1`).
    pub client_if: Iface,
    /// The dut's client-facing port (`dut-a0`, `<subnet>.3` with `dut_addrs`).
    pub dut_a: Iface,
    /// The dut's server-facing port (`dut-b0`, `<subnet>.4` with `dut_addrs`).
    pub dut_b: Iface,
    /// The server's interface (`srv0`, `<subnet>.2`).
    pub server_if: Iface,
}

/// Locally administered MACs, fixed so captures and assertions are easy to read.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0x73, 0x6c, 0x00, 0x00, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x73, 0x6c, 0x00, 0x00, 0x02];
pub const DUT_A_MAC: [u8; 6] = [0x02, 0x73, 0x6c, 0x00, 0x00, 0x0a];
pub const DUT_B_MAC: [u8; 6] = [0x02, 0x73, 0x6c, 0x00, 0x00, 0x0b];

impl Topology {
    pub fn new(opts: TopologyOpts) -> Result<Self, NetnsError> {
        let client = Netns::new(&format!("c{}", opts.tag))?;
        let dut = Netns::new(&format!("d{}", opts.tag))?;
        let server = Netns::new(&format!("s{}", opts.tag))?;
        if !opts.ipv6 {
            for ns in [&client, &dut, &server] {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            }
        }
        let [a, b, c] = opts.subnet;
        let host = |n| Ipv4Addr::new(a, b, c, n);
        veth(
            &opts,
            (&client, "cli0", &CLIENT_MAC),
            (&dut, "dut-a0", &DUT_A_MAC),
        )?;
        veth(
            &opts,
            (&dut, "dut-b0", &DUT_B_MAC),
            (&server, "srv0", &SERVER_MAC),
        )?;

        for (ns, ifname) in [
            (&client, "cli0"),
            (&dut, "dut-a0"),
            (&dut, "dut-b0"),
            (&server, "srv0"),
        ] {
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        let client_addr = host(1);
        let server_addr = host(2);
        client.ip(&["addr", "add", &format!("{client_addr}/24"), "dev", "cli0"])?;
        server.ip(&["addr", "add", &format!("{server_addr}/24"), "dev", "srv0"])?;
        let (dut_a_addr, dut_b_addr) = if opts.dut_addrs {
            // /32 plus a host route per port: the dut answers each side through the port
            // it was asked on, never across the wire.
            for (port, addr, peer) in [
                ("dut-a0", host(3), client_addr),
                ("dut-b0", host(4), server_addr),
            ] {
                dut.ip(&["addr", "add", &format!("{addr}/32"), "dev", port])?;
                dut.ip(&["route", "add", &format!("{peer}/32"), "dev", port])?;
            }
            (Some(host(3)), Some(host(4)))
        } else {
            (None, None)
        };
        for (ns, ifname, peer, mac) in [
            (&client, "cli0", server_addr, &SERVER_MAC),
            (&server, "srv0", client_addr, &CLIENT_MAC),
        ] {
            let (peer, mac) = (peer.to_string(), mac_string(mac));
            ns.ip(&[
                "neigh",
                "replace",
                &peer,
                "lladdr",
                &mac,
                "dev",
                ifname,
                "nud",
                "permanent",
            ])?;
        }
        let iface = |ns: &Netns, name: &str, mac: [u8; 6], addr| -> Result<Iface, NetnsError> {
            Ok(Iface {
                name: name.to_string(),
                ifindex: ns.ifindex(name)?,
                mac,
                addr,
            })
        };
        Ok(Topology {
            client_if: iface(&client, "cli0", CLIENT_MAC, Some(client_addr))?,
            dut_a: iface(&dut, "dut-a0", DUT_A_MAC, dut_a_addr)?,
            dut_b: iface(&dut, "dut-b0", DUT_B_MAC, dut_b_addr)?,
            server_if: iface(&server, "srv0", SERVER_MAC, Some(server_addr))?,
            client,
            dut,
            server,
        })
    }
}

/// Creates a veth pair with each end directly in its namespace.
fn veth(
    opts: &TopologyOpts,
    (ns1, name1, mac1): (&Netns, &str, &[u8; 6]),
    (ns2, name2, mac2): (&Netns, &str, &[u8; 6]),
) -> Result<(), NetnsError> {
    for name in [name1, name2] {
        if name.len() > 15 {
            return Err(NetnsError::IfName {
                name: name.to_string(),
            });
        }
    }
    let (q, mtu) = (opts.queues.to_string(), opts.mtu.to_string());
    let (mac1, mac2) = (mac_string(mac1), mac_string(mac2));
    let end = |ns: &Netns, mac: &str| {
        vec![
            ns.name().to_string(),
            "address".into(),
            mac.to_string(),
            "mtu".into(),
            mtu.clone(),
            "numrxqueues".into(),
            q.clone(),
            "numtxqueues".into(),
            q.clone(),
        ]
    };
    let mut cmd = Command::new("ip");
    cmd.args(["link", "add", name1, "netns"])
        .args(end(ns1, &mac1))
        .args(["type", "veth", "peer", "name", name2, "netns"])
        .args(end(ns2, &mac2));
    run(&mut cmd).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one datagram from `ns` to `to` and returns how the first receive fails.
    fn udp_probe(ns: &Netns, to: &str) -> Option<std::io::ErrorKind> {
        ns.run_in(|| {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
            sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                .ok()?;
            sock.connect(to).ok()?;
            sock.send(b"probe").ok()?;
            let mut buf = [0u8; 16];
            sock.recv(&mut buf).err().map(|e| e.kind())
        })
        .expect("enter namespace")
    }

    fn netns_list() -> String {
        run(Command::new("ip").args(["netns", "list"])).unwrap_or_default()
    }

    #[test]
    fn mac_string_formats_lowercase_hex() {
        assert_eq!(
            mac_string(&[0x02, 0xab, 0, 1, 0x10, 0xff]),
            "02:ab:00:01:10:ff"
        );
    }

    #[test]
    fn link_field_reads_ip_json() {
        let json = r#"[{"ifindex":7,"ifname":"x","address":"02:00:00:00:00:01"}]"#;
        assert_eq!(
            link_field(json, "ifindex").and_then(|v| v.as_u64()),
            Some(7)
        );
        assert!(link_field("[]", "ifindex").is_none());
        assert!(link_field("garbage", "ifindex").is_none());
    }

    #[test]
    fn topology_builds_and_tears_down() {
        if !privileged("netns") {
            return;
        }
        let names;
        {
            let topo = Topology::new(TopologyOpts {
                tag: "topo".into(),
                ..Default::default()
            })
            .expect("build topology");
            names = [
                topo.client.name().to_string(),
                topo.dut.name().to_string(),
                topo.server.name().to_string(),
            ];
            let list = netns_list();
            for n in &names {
                assert!(
                    list.lines().any(|l| l.split_whitespace().next() == Some(n)),
                    "{n} missing"
                );
            }
            // The client resolves and reaches the dut's own address: a UDP datagram to a
            // closed port comes back as ICMP port-unreachable (ARP + IP round trip).
            assert_eq!(
                udp_probe(&topo.client, "10.77.0.3:9"),
                Some(std::io::ErrorKind::ConnectionRefused)
            );
            // ...but not the server: the dut is a wire with nothing on it yet.
            assert_eq!(
                udp_probe(&topo.server, "10.77.0.1:9"),
                Some(std::io::ErrorKind::WouldBlock)
            );
            let link = topo
                .dut
                .ip(&["-j", "link", "show", "dev", "dut-b0"])
                .expect("show dut-b0");
            assert_eq!(
                link_field(&link, "address").and_then(|v| v.as_str().map(str::to_string)),
                Some(mac_string(&DUT_B_MAC))
            );
            assert_eq!(
                link_field(&link, "mtu").and_then(|v| v.as_u64()),
                Some(1500)
            );
            // run_in really switches namespace: the thread sees the dut's interfaces.
            let dev = topo
                .dut
                .run_in(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
                .expect("enter dut")
                .expect("read net/dev");
            assert!(dev.contains("dut-a0") && !dev.contains("cli0"), "{dev}");
        }
        let list = netns_list();
        for n in &names {
            assert!(
                !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
                "{n} left behind"
            );
        }
        let links = run(Command::new("ip").args(["link", "show"])).expect("ip link");
        for ifname in ["cli0", "dut-a0", "dut-b0", "srv0"] {
            assert!(
                !links.contains(&format!(" {ifname}@")),
                "{ifname} left in the root namespace"
            );
        }
    }

    #[test]
    fn netns_removed_on_panic() {
        if !privileged("netns") {
            return;
        }
        let name = std::sync::Mutex::new(String::new());
        let result = std::panic::catch_unwind(|| {
            let ns = Netns::new("panic").expect("create namespace");
            *name.lock().expect("lock") = ns.name().to_string();
            panic!("deliberate");
        });
        assert!(result.is_err());
        let name = name.into_inner().expect("lock");
        assert!(!name.is_empty());
        assert!(
            !netns_list().contains(&name),
            "{name} left behind after a panic"
        );
    }
}
