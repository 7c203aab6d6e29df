//! The control server against a recording test backend: every command, every malformed-input
//! case, the connection limit, a client that never reads, socket permissions and peer checks,
//! SIGHUP, and the Prometheus endpoint. The real backend is tested with the pipeline.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::control::backend::{Backend, BackendError, BackendResult, MetricsSnapshot};
use sluice::control::client::{Client, ClientError};
use sluice::control::proto::*;
use sluice::control::{Server, ServerOptions};
use sluice::stats::QueueSnapshot;

/// Records every call as a line of text and answers with fixed, recognisable values. Counters
/// grow by 10 packets per `metrics()` call so that resets are observable.
#[derive(Default)]
struct TestBackend {
    calls: Mutex<Vec<String>>,
    ticks: AtomicU64,
}

impl TestBackend {
    fn record(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn swap(port: &str, stages: usize) -> BackendResult<SwapReport> {
        if port == "z" {
            return Err(BackendError::not_found("port `z` does not exist"));
        }
        Ok(SwapReport { port: port.into(), generation: 2, stages, compile_us: 5 })
    }
}

impl Backend for TestBackend {
    fn status(&self) -> BackendResult<Status> {
        self.record("status".into());
        Ok(Status {
            version: "test".into(),
            pid: 42,
            uptime_secs: 1.5,
            config: "/etc/sluice.toml".into(),
            workers: 1,
            swaps: 3,
            ports: vec![PortStatus { name: "a".into(), interface: "dut-a".into(), queues: vec![0], action: Action::Drop, stages: 1, generation: 1 }],
            capture: None,
            firewall: None,
        })
    }

    fn metrics(&self) -> MetricsSnapshot {
        let t = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let mut m = MetricsSnapshot::empty();
        m.queues.push(QueueEntry { port: "a".into(), interface: "dut-a".into(), queue: 0, counters: QueueSnapshot { rx: 10 * t, tx: 10 * t, ..Default::default() } });
        m.stages.push(StageEntry { port: "a".into(), id: "dns".into(), packets: t, bytes: 100 * t });
        m.steering.push(SteerEntry { interface: "dut-a".into(), counters: SteerEntryCounters { seen: 11 * t, redirected: 10 * t, passed: t, dropped: 0 } });
        m.swaps = t;
        for _ in 0..t {
            m.batch_ns.record(1000).unwrap();
        }
        m
    }

    fn pipelines(&self, port: Option<&str>) -> BackendResult<Vec<PipelineInfo>> {
        self.record(format!("pipelines {port:?}"));
        if port == Some("z") {
            return Err(BackendError::not_found("port `z` does not exist"));
        }
        let spec = StageSpec { id: "dns".into(), filter: "udp port 53".into(), format: FilterFormat::Tcpdump, section: None, action: Action::Count };
        Ok(vec![PipelineInfo { port: "a".into(), generation: 1, stages: vec![StageInfo { spec, packets: 7, bytes: 700 }], default: Action::Drop }])
    }

    fn replace_pipeline(&self, port: &str, spec: PipelineSpec) -> BackendResult<SwapReport> {
        self.record(format!("replace {port} {} default={:?}", spec.stages.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(","), spec.default.map(|a| a.to_string())));
        if let Some(s) = spec.stages.iter().find(|s| s.filter == "bad") {
            return Err(BackendError::rejected(format!("stage `{}`: tcpdump expression: syntax error", s.id)));
        }
        TestBackend::swap(port, spec.stages.len())
    }

    fn add_stage(&self, port: &str, stage: StageSpec, position: Option<usize>) -> BackendResult<SwapReport> {
        self.record(format!("add {port} {} {} {:?} {position:?}", stage.id, stage.action, stage.format));
        TestBackend::swap(port, 2)
    }

    fn remove_stage(&self, port: &str, id: &str) -> BackendResult<SwapReport> {
        self.record(format!("remove {port} {id}"));
        if id != "dns" {
            return Err(BackendError::not_found(format!("port `{port}` has no stage `{id}`")));
        }
        TestBackend::swap(port, 0)
    }

    fn move_stage(&self, port: &str, id: &str, position: usize) -> BackendResult<SwapReport> {
        self.record(format!("move {port} {id} {position}"));
        TestBackend::swap(port, 1)
    }

    fn set_port_action(&self, port: &str, action: &Action) -> BackendResult<SwapReport> {
        self.record(format!("action {port} {action}"));
        TestBackend::swap(port, 1)
    }

    fn reload(&self) -> BackendResult<ReloadReport> {
        self.record("reload".into());
        Ok(ReloadReport { config: "/etc/sluice.toml".into(), changes: vec!["port a: pipeline replaced".into()] })
    }

    fn capture_start(&self, spec: &CaptureSpec) -> BackendResult<CaptureInfo> {
        self.record(format!("capture_start {} {:?} {:?}", spec.path.display(), spec.port, spec.limit));
        Ok(CaptureInfo { path: spec.path.clone(), port: spec.port.clone(), filter: spec.filter.clone(), packets: 0, dropped: 0, running: true })
    }

    fn capture_stop(&self) -> BackendResult<CaptureInfo> {
        self.record("capture_stop".into());
        Err(BackendError::not_found("no capture is running"))
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A server on its own thread with a socket in its own directory; stopped, joined and
/// cleaned up on drop.
struct Harness {
    dir: PathBuf,
    path: PathBuf,
    backend: Arc<TestBackend>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    metrics: Option<std::net::SocketAddr>,
}

impl Harness {
    fn start() -> Harness {
        Harness::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut ServerOptions)) -> Harness {
        let dir = std::env::temp_dir().join(format!("sluice-ctl-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        // World-searchable, so the permission tests test the socket's mode and not this one's.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("ctl.sock");
        let mut opts = ServerOptions::new(&path);
        tune(&mut opts);
        let server = Server::bind(opts).expect("bind control server");
        let metrics = server.metrics_addr();
        let backend = Arc::new(TestBackend::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&backend) as Arc<dyn Backend>, Arc::clone(&stop));
        let thread = std::thread::spawn(move || server.run(b, &s).expect("server runs"));
        Harness { dir, path, backend, stop, thread: Some(thread), metrics }
    }

    fn client(&self) -> Client {
        Client::connect(&self.path).expect("connect")
    }

    fn raw(&self) -> Raw {
        let s = UnixStream::connect(&self.path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw { reader: BufReader::new(s.try_clone().unwrap()), stream: s }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client speaking raw lines.
struct Raw {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Raw {
    fn send(&mut self, line: &[u8]) {
        self.stream.write_all(line).unwrap();
    }

    fn reply(&mut self) -> Value {
        let mut s = String::new();
        assert!(self.reader.read_line(&mut s).unwrap() > 0, "connection closed without a reply");
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn ask(&mut self, line: &str) -> Value {
        self.send(format!("{line}\n").as_bytes());
        self.reply()
    }

    fn at_eof(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["v"], 1);
    reply["error"]["code"].as_str().unwrap()
}

fn stage(id: &str, filter: &str) -> StageSpec {
    StageSpec { id: id.into(), filter: filter.into(), format: FilterFormat::Tcpdump, section: None, action: Action::Count }
}

#[test]
fn every_command_reaches_the_backend_and_answers() {
    let h = Harness::start();
    let mut c = h.client();

    let st: Status = c.call_as(Command::Status).unwrap();
    assert_eq!((st.pid, st.ports[0].name.as_str()), (42, "a"));

    let stats: StatsReply = c.call_as(Command::Stats { reset: false }).unwrap();
    assert_eq!(stats.queues[0].counters.rx, 10);
    assert_eq!(stats.stages[0].id, "dns");
    assert_eq!(stats.steering[0].counters.passed, 1);

    let p: Vec<PipelineInfo> = c.call_as(Command::PipelineList { port: Some("a".into()) }).unwrap();
    assert_eq!((p[0].stages[0].spec.id.as_str(), p[0].stages[0].packets), ("dns", 7));

    let spec = PipelineSpec { stages: vec![stage("dns", "udp port 53"), stage("web", "tcp port 80")], default: Some(Action::Reflect) };
    let r: SwapReport = c.call_as(Command::PipelineReplace { port: "a".into(), source: PipelineSource::Inline(spec) }).unwrap();
    assert_eq!((r.generation, r.stages), (2, 2));

    let added = StageSpec { format: FilterFormat::File, section: Some("xdp".into()), action: Action::Verdict, ..stage("obj", "/x.o") };
    c.call(Command::StageAdd { port: "a".into(), stage: added, position: Some(1) }).unwrap();
    c.call(Command::StageRemove { port: "a".into(), id: "dns".into() }).unwrap();
    c.call(Command::StageMove { port: "a".into(), id: "web".into(), position: 0 }).unwrap();
    c.call(Command::PortAction { port: "a".into(), action: Action::Forward("b".into()) }).unwrap();
    let rr: ReloadReport = c.call_as(Command::Reload).unwrap();
    assert_eq!(rr.changes.len(), 1);
    let hist: HistogramReply = c.call_as(Command::Histogram { reset: false }).unwrap();
    assert_eq!(hist.unit, "ns");
    assert!(hist.count >= 1 && hist.quantiles.len() == 5, "{hist:?}");
    let cap: CaptureInfo = c
        .call_as(Command::CaptureStart(CaptureSpec { path: "/tmp/c.pcap".into(), port: Some("a".into()), limit: Some(5), snaplen: None, filter: None }))
        .unwrap();
    assert!(cap.running);
    match c.call(Command::CaptureStop) {
        Err(ClientError::Server(e)) => assert_eq!((e.code, e.message.as_str()), (ErrorCode::NotFound, "no capture is running")),
        other => panic!("{other:?}"),
    }

    assert_eq!(
        h.backend.calls(),
        [
            "status",
            "pipelines Some(\"a\")",
            "replace a dns,web default=Some(\"reflect\")",
            "add a obj verdict File Some(1)",
            "remove a dns",
            "move a web 0",
            "action a forward:b",
            "reload",
            "capture_start /tmp/c.pcap Some(\"a\") Some(5)",
            "capture_stop",
        ]
    );
}

#[test]
fn backend_errors_keep_their_class_and_message() {
    let h = Harness::start();
    let mut raw = h.raw();
    let r = raw.ask(r#"{"v":1,"id":"x1","cmd":"stage_remove","port":"a","stage":"nope"}"#);
    assert_eq!(error_code(&r), "not_found");
    assert_eq!(r["id"], "x1");
    assert_eq!(r["error"]["message"], "port `a` has no stage `nope`");
    let r = raw.ask(r#"{"v":1,"id":2,"cmd":"pipeline_replace","port":"a","stages":[{"id":"s","filter":"bad","action":"drop"}]}"#);
    assert_eq!(error_code(&r), "rejected");
    assert!(r["error"]["message"].as_str().unwrap().contains("stage `s`: tcpdump expression"), "{r}");
    let r = raw.ask(r#"{"v":1,"id":3,"cmd":"pipeline_list","port":"z"}"#);
    assert_eq!(error_code(&r), "not_found");
    // The connection survives errors.
    let r = raw.ask(r#"{"v":1,"id":4,"cmd":"status"}"#);
    assert_eq!(r["ok"], true);
    assert_eq!(r["id"], 4);
    assert_eq!(r["result"]["pid"], 42);
}

#[test]
fn stats_and_histogram_reset_to_a_baseline() {
    let h = Harness::start();
    let mut c = h.client();
    // Each metrics() call adds 10 rx; a reset makes the next reading cover one call's worth.
    let first: StatsReply = c.call_as(Command::Stats { reset: true }).unwrap();
    assert_eq!(first.queues[0].counters.rx, 10);
    let second: StatsReply = c.call_as(Command::Stats { reset: false }).unwrap();
    assert_eq!(second.queues[0].counters.rx, 10);
    assert_eq!(second.stages[0].packets, 1);
    assert_eq!(second.steering[0].counters.seen, 11);
    assert_eq!(second.swaps, 1);
    let third: StatsReply = c.call_as(Command::Stats { reset: false }).unwrap();
    assert_eq!(third.queues[0].counters.rx, 20);

    let a: HistogramReply = c.call_as(Command::Histogram { reset: true }).unwrap();
    let b: HistogramReply = c.call_as(Command::Histogram { reset: false }).unwrap();
    assert_eq!(b.count, 1, "one metrics() call since the reset ({} before)", a.count);
    assert_eq!(b.buckets.iter().map(|&(_, n)| n).sum::<u64>(), 1);
}

#[test]
fn pipeline_files_are_read_by_the_server() {
    let h = Harness::start();
    let mut c = h.client();
    let toml_path = h.dir.join("p.toml");
    std::fs::write(&toml_path, "default = \"drop\"\n[[stage]]\nid = \"dns\"\nfilter = \"udp port 53\"\naction = \"count\"\n").unwrap();
    c.call(Command::PipelineReplace { port: "a".into(), source: PipelineSource::File(toml_path.clone()) }).unwrap();
    let json_path = h.dir.join("p.json");
    std::fs::write(&json_path, r#"{"stage":[{"id":"w","filter":"tcp","action":"sample"}]}"#).unwrap();
    c.call(Command::PipelineReplace { port: "a".into(), source: PipelineSource::File(json_path) }).unwrap();
    assert_eq!(h.backend.calls(), ["replace a dns default=Some(\"drop\")", "replace a w default=None"]);

    let cases: [(&str, &str, ErrorCode, &str); 4] = [
        ("missing.toml", "", ErrorCode::NotFound, "no such file"),
        ("syntax.toml", "[[stage]\n", ErrorCode::Rejected, "syntax.toml"),
        ("unknown.toml", "[[stage]]\nid='a'\nfilter='ip'\naction='drop'\ncolour=1\n", ErrorCode::Rejected, "unknown field `colour`"),
        ("dup.toml", "[[stage]]\nid='a'\nfilter='ip'\naction='drop'\n[[stage]]\nid='a'\nfilter='ip'\naction='drop'\n", ErrorCode::Rejected, "stage[1].id`: `a` is used twice"),
    ];
    for (name, body, code, want) in cases {
        let path = h.dir.join(name);
        if !body.is_empty() {
            std::fs::write(&path, body).unwrap();
        }
        match c.call(Command::PipelineReplace { port: "a".into(), source: PipelineSource::File(path) }) {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, code, "{name}: {e}");
                assert!(e.message.contains(want), "{name}: {}", e.message);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(h.backend.calls().len(), 2, "rejected files never reach the backend");
}

#[test]
fn malformed_requests_get_errors_and_the_connection_survives() {
    let h = Harness::start();
    let mut raw = h.raw();
    let cases = [
        ("this is not json", "invalid_json"),
        ("{\"v\":1,\"cmd\":\"status\"", "invalid_json"),
        ("42", "invalid_json"),
        (r#"{"cmd":"status"}"#, "bad_version"),
        (r#"{"v":"1","cmd":"status"}"#, "bad_version"),
        (r#"{"v":1,"cmd":"shutdown"}"#, "unknown_command"),
        (r#"{"v":1,"cmd":"stats","reset":1}"#, "invalid_argument"),
        (r#"{"v":1,"cmd":"stage_move","port":"a","stage":"x","position":"first"}"#, "invalid_argument"),
        (r#"{"v":1,"cmd":"port_action","port":"a","action":"count"}"#, "invalid_argument"),
        (r#"{"v":1,"cmd":"status","extra":true}"#, "invalid_argument"),
        ("\u{0}\u{1}\u{2}", "invalid_json"),
    ];
    for (line, code) in cases {
        let r = raw.ask(line);
        assert_eq!(error_code(&r), code, "{line}: {r}");
        assert!(!r["error"]["message"].as_str().unwrap().is_empty());
    }
    // Wrong types name the field.
    let r = raw.ask(r#"{"v":1,"id":9,"cmd":"stats","reset":"yes"}"#);
    assert_eq!(r["error"]["message"], "field `reset`: expected a boolean, got a string");
    assert_eq!(r["id"], 9);
    // Blank lines and CRLF are tolerated.
    raw.send(b"\r\n");
    let r = raw.ask("{\"v\":1,\"id\":10,\"cmd\":\"status\"}\r");
    assert_eq!(r["ok"], true, "{r}");
    assert!(h.backend.calls().iter().all(|c| c == "status"), "{:?}", h.backend.calls());
}

#[test]
fn an_over_long_line_is_refused_and_the_connection_closed() {
    let h = Harness::start();
    let mut raw = h.raw();
    let mut line = br#"{"v":1,"cmd":"status","pad":""#.to_vec();
    line.resize(MAX_LINE + 100, b'x');
    raw.send(&line);
    let r = raw.reply();
    assert_eq!(error_code(&r), "line_too_long");
    assert!(raw.at_eof(), "closed after the error");

    // The same with the newline present (the line arrived whole).
    let mut raw = h.raw();
    line.extend_from_slice(b"\"}\n");
    let _ = raw.stream.write_all(&line);
    assert_eq!(error_code(&raw.reply()), "line_too_long");
    assert!(raw.at_eof());

    // A line just under the limit is fine.
    let mut raw = h.raw();
    let mut ok = br#"{"v":1,"cmd":"status","id":""#.to_vec();
    ok.resize(MAX_LINE - 10, b'y');
    ok.extend_from_slice(b"\"}\n");
    raw.send(&ok);
    assert_eq!(raw.reply()["ok"], true);
}

#[test]
fn a_client_that_never_reads_is_dropped_and_others_are_served() {
    let h = Harness::with(|o| o.max_output = 64 * 1024);
    let hog = UnixStream::connect(&h.path).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let request = b"{\"v\":1,\"cmd\":\"pipeline_list\"}\n".repeat(64);
    let started = Instant::now();
    let mut hog_w = &hog;
    let dropped = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "the server never dropped the non-reading client");
        match hog_w.write_all(&request) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => break true,
            // Our send buffer is full: the server stopped reading us (it is holding a full
            // output buffer) or is about to drop us. Either way, check that others get served.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(e) => panic!("{e}"),
        }
    };
    let t = Instant::now();
    let mut c = h.client();
    c.call(Command::Status).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "a stuck client slowed others: {:?}", t.elapsed());
    if !dropped {
        // Keep pushing until the server's side gives up on us.
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < Duration::from_secs(20), "the server never dropped the non-reading client");
            match hog_w.write_all(&request) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

#[test]
fn a_thousand_concurrent_clients_are_served_and_the_next_is_refused() {
    let h = Harness::with(|o| o.max_clients = 1000);
    let mut clients: Vec<Raw> = (0..1000).map(|_| h.raw()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("{{\"v\":1,\"id\":{i},\"cmd\":\"status\"}}\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.reply();
        assert_eq!((r["ok"].as_bool(), r["id"].as_u64()), (Some(true), Some(i as u64)), "{r}");
    }
    let mut extra = h.raw();
    let r = extra.reply();
    assert_eq!(error_code(&r), "busy");
    assert!(r["error"]["message"].as_str().unwrap().contains("limit 1000"), "{r}");
    assert!(extra.at_eof());
    // Every one of the thousand still works, and a freed slot is reusable.
    let r = clients[999].ask(r#"{"v":1,"cmd":"status"}"#);
    assert_eq!(r["ok"], true);
    drop(clients.pop());
    let started = Instant::now();
    loop {
        let mut again = h.raw();
        let r = again.ask(r#"{"v":1,"cmd":"status"}"#);
        if r["ok"] == true {
            break;
        }
        assert_eq!(error_code(&r), "busy");
        assert!(started.elapsed() < Duration::from_secs(5), "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_socket_is_owner_only_and_replaced_only_when_stale() {
    let h = Harness::start();
    let mode = std::fs::metadata(&h.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert!(std::fs::read_dir(&h.dir).unwrap().all(|e| e.unwrap().file_name() == "ctl.sock"), "no staging leftovers");

    // A second server on a live socket is refused.
    match Server::bind(ServerOptions::new(&h.path)) {
        Err(e) => assert!(e.to_string().contains("another process is serving"), "{e}"),
        Ok(_) => panic!("bound over a live socket"),
    }
    // A regular file is never replaced.
    let file = h.dir.join("plain");
    std::fs::write(&file, "x").unwrap();
    match Server::bind(ServerOptions::new(&file)) {
        Err(e) => assert!(e.to_string().contains("is not a socket"), "{e}"),
        Ok(_) => panic!("replaced a regular file"),
    }
    // A stale socket (its listener gone) is replaced, and removed again on drop.
    let stale = h.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let s = Server::bind(ServerOptions::new(&stale)).expect("replace a stale socket");
    assert!(UnixStream::connect(&stale).is_ok());
    drop(s);
    assert!(!stale.exists(), "socket removed on drop");
}

/// Forks a child that becomes `nobody` and tries to use the socket; returns what it saw:
/// "refused" (connect failed with EACCES), "denied" (the server's permission error), or the
/// unexpected.
fn as_nobody(path: &Path) -> String {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(c_path.as_bytes()) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0; 2];
    // SAFETY: a pipe into a two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes raw system calls on stack data prepared above (no
    // allocation, no locks) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let verdict: &[u8] = if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                b"setuid failed"
            } else {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                    if *libc::__errno_location() == libc::EACCES { b"refused" } else { b"connect failed otherwise" }
                } else {
                    let mut buf = [0u8; 512];
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    let text = if n > 0 { &buf[..n as usize] } else { &[][..] };
                    if text.windows(17).any(|w| w == b"permission_denied") { b"denied" } else { b"connected and served" }
                }
            };
            libc::write(fds[1], verdict.as_ptr().cast(), verdict.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; reading the child's verdict; reaping it.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    f.read_to_end(&mut out).unwrap();
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    String::from_utf8_lossy(&out).into_owned()
}

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} must run as root under CI=true");
    eprintln!("skipping {test}: needs root (to become another user)");
    false
}

#[test]
fn a_non_owner_cannot_connect() {
    if !root_or_skip("a_non_owner_cannot_connect") {
        return;
    }
    let h = Harness::start();
    assert_eq!(as_nobody(&h.path), "refused", "the 0600 socket keeps other users out");
    // Even with the file opened up, SO_PEERCRED keeps them out.
    std::fs::set_permissions(&h.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(as_nobody(&h.path), "denied");
    // And the owner is still served.
    h.client().call(Command::Status).unwrap();
    assert_eq!(h.backend.calls(), ["status"], "the refused peer reached nothing");
}

#[test]
fn sighup_reloads_through_the_backend() {
    let h = Harness::with(|o| o.reload_on_sighup = true);
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    let started = Instant::now();
    while !h.backend.calls().contains(&"reload".to_string()) {
        assert!(started.elapsed() < Duration::from_secs(5), "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn prometheus_metrics_over_http() {
    let h = Harness::with(|o| o.metrics = Some("127.0.0.1:0".parse().unwrap()));
    let addr = h.metrics.unwrap();
    let r = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    let len: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().parse().unwrap();
    assert_eq!(len, body.len());
    for want in [
        "# TYPE sluice_rx_packets_total counter\n",
        "sluice_rx_packets_total{port=\"a\",interface=\"dut-a\",queue=\"0\"} 10\n",
        "sluice_stage_packets_total{port=\"a\",stage=\"dns\"} 1\n",
        "sluice_steer_redirected_total{interface=\"dut-a\"} 10\n",
        "# TYPE sluice_batch_duration_seconds histogram\n",
        "sluice_batch_duration_seconds_count 1\n",
    ] {
        assert!(body.contains(want), "missing {want:?}");
    }
    assert!(http(addr, "GET /nope HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(http(addr, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 405"));
    let head_only = http(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(head_only.starts_with("HTTP/1.1 200") && head_only.ends_with("\r\n\r\n"), "{head_only}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(10_000));
    assert!(http(addr, &huge).starts_with("HTTP/1.1 431"));
    // The control socket keeps working next to it.
    h.client().call(Command::Status).unwrap();
}

fn sluice(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run sluice")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sluice_ctl_prints_summaries_json_and_errors() {
    let h = Harness::start();
    let sock = h.path.to_str().unwrap();
    let out = sluice(&["ctl", "--socket", sock, "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sluice test (pid 42), up 1.5s, config /etc/sluice.toml"), "{stdout}");
    assert!(stdout.contains("port a") && stdout.contains("default drop"), "{stdout}");

    let out = sluice(&["ctl", "-s", sock, "--json", "stats"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["queues"][0]["counters"]["rx"], 10);

    let out = sluice(&["ctl", "-s", sock, "pipeline"]);
    assert!(text(&out.stdout).contains("port a (generation 1), default drop"), "{}", text(&out.stdout));
    let out = sluice(&["ctl", "-s", sock, "add", "-p", "a", "--id", "web", "--filter", "tcp port 80", "--action", "drop", "--position", "0"]);
    assert!(text(&out.stdout).contains("port a: generation 2 running"), "{}", text(&out.stderr));
    let out = sluice(&["ctl", "-s", sock, "action", "-p", "a", "forward:b"]);
    assert!(out.status.success());
    let out = sluice(&["ctl", "-s", sock, "histogram"]);
    assert!(text(&out.stdout).contains("batch processing time: 2 batches"), "{}", text(&out.stdout));

    let pipeline = h.dir.join("p.toml");
    std::fs::write(&pipeline, "[[stage]]\nid='x'\nfilter='ip'\naction='count'\n").unwrap();
    let out = sluice(&["ctl", "-s", sock, "replace", "-p", "a", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sluice(&["ctl", "-s", sock, "remove", "-p", "a", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: not_found: port `a` has no stage `nope`"), "{}", text(&out.stderr));
    let out = sluice(&["ctl", "-s", sock, "action", "-p", "a", "count"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a port action"), "{}", text(&out.stderr));

    let out = sluice(&["ctl", "-s", "/nonexistent/ctl.sock", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("connect to /nonexistent/ctl.sock"), "{}", text(&out.stderr));
    assert_eq!(
        h.backend.calls(),
        ["status", "pipelines None", "add a web drop Tcpdump Some(0)", "action a forward:b", "replace a x default=None", "remove a nope"]
    );
}

fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn sluice_check_validates_without_touching_interfaces() {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = "[[port]]\nname='a'\ninterface='no-such-if0'\naction='drop'\n";
    let good = write_config(&dir, "good.toml", &format!("user='nobody'\n[control]\nsocket='/run/sluice/control.sock'\n[metrics]\nlisten='9100'\n{port}"));
    let out = sluice(&["check", "--config", good.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("good.toml: valid"), "{stdout}");
    assert!(stdout.contains("control socket: /run/sluice/control.sock"), "{stdout}");
    assert!(stdout.contains("metrics: http://127.0.0.1:9100/metrics"), "{stdout}");
    assert!(stdout.contains("runs as: nobody (uid 65534"), "{stdout}");

    let staged = write_config(
        &dir,
        "staged.toml",
        &format!("{port}[[port.stage]]\nid='dns'\nfilter='udp dst port 53'\naction='count'\n[[port.stage]]\nid='ssh'\nfilter='tcp port 22'\naction='drop'\n"),
    );
    let out = sluice(&["check", "--config", staged.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("port a on no-such-if0 queues 0: 2 stage(s), default drop,"), "{stdout}");
    assert!(!stdout.contains(" 0 bytes of native code"), "the stages were compiled: {stdout}");

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/appliance.toml");
    assert!(sluice(&["check", "--config", shipped.to_str().unwrap()]).status.success());

    let cases = [
        ("syntax.toml", "[[port]\n".to_string(), "syntax.toml: line 1"),
        ("key.toml", format!("[metrics]\nlisten='nowhere'\n{port}"), "metrics.listen: `nowhere` is not PORT"),
        ("user.toml", format!("user='no-such-user-zz'\n{port}"), "user: user `no-such-user-zz` does not exist"),
        ("group.toml", format!("user='nobody'\ngroup='no-such-group-zz'\n{port}"), "group: group `no-such-group-zz` does not exist"),
        ("ports.toml", String::new(), "at least one [[port]]"),
        ("filter.toml", format!("{port}[[port.stage]]\nid='x'\nfilter='ip'\naction='count'\n[[port.stage]]\nid='bad'\nfilter='udp port'\naction='drop'\n"), "port[0].stage[1]: stage `bad`: tcpdump expression"),
        ("file.toml", format!("{port}[[port.stage]]\nid='f'\nfile='nope.bpf'\nformat='asm'\naction='verdict'\n"), "port[0].stage[0]: stage `f`: read filter file"),
    ];
    for (name, body, want) in cases {
        let path = write_config(&dir, name, &body);
        let out = sluice(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{name}: {}", text(&out.stderr));
    }
    let out = sluice(&["check", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the daemon (if still running) before the namespaces and files go.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or("").trim().to_owned()
}

/// The whole lifecycle on a real dataplane: started with a control socket, metrics and
/// `user = "nobody"`; driven with `sluice ctl` and the client; SIGHUP; SIGTERM leaves nothing
/// attached and exits 0.
#[test]
fn live_daemon_is_controlled_as_nobody_and_stops_cleanly() {
    use sluice::testbed::netns::{Topology, TopologyOpts, privileged};
    if !privileged("live_daemon_is_controlled_as_nobody_and_stops_cleanly") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "ctl".into(), ..Default::default() }).expect("topology");
    let dir = std::env::temp_dir().join(format!("sluice-live-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("ctl.sock");
    let config = dir.join("sluice.toml");
    // A firewall with a kernel rule and a userspace (tcpdump) rule: its reload, as nobody,
    // rewrites the kernel maps and compiles the expression again.
    let fw = dir.join("fw.toml");
    std::fs::write(&fw, "[firewall]\ndefault = 'accept'\n[[rule]]\nname = 'k'\nproto = 'udp'\ndport = 9\naction = 'drop'\n\
                         [[rule]]\nname = 'u'\nmatch = 'udp port 10'\naction = 'drop'\n").unwrap();
    std::fs::set_permissions(&fw, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        &config,
        format!(
            "user = 'nobody'\n[control]\nsocket = '{}'\n[metrics]\nlisten = '9464'\n[dataplane]\ncores = [0]\nfirewall = 'fw.toml'\n\
             [[port]]\nname = 'a'\ninterface = 'dut-a0'\naction = 'forward'\nforward_to = 'b'\n\
             [[port.stage]]\nid = 'dns'\nfilter = 'udp dst port 53'\naction = 'count'\n\
             [[port]]\nname = 'b'\ninterface = 'dut-b0'\naction = 'forward'\nforward_to = 'a'\n",
            sock.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let child = topo
        .dut
        .exec([env!("CARGO_BIN_EXE_sluice"), "run", "--config", config.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice");
    let pid = child.id();
    let mut daemon = Daemon(child);
    let started = Instant::now();
    while proc_status_field(pid, "Uid:").split_whitespace().next() != Some("65534") {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            let mut err = String::new();
            let _ = daemon.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("sluice exited with {status}: {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "sluice never dropped privileges");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every id is nobody's and no capability is left on any thread.
    assert_eq!(proc_status_field(pid, "Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(proc_status_field(pid, "Gid:"), "65534\t65534\t65534\t65534");
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_owned();
        assert_eq!(eff, "0000000000000000", "a thread kept capabilities");
    }
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&meta), meta.permissions().mode() & 0o777), (65534, 0o600));

    let mut c = Client::connect(&sock).expect("connect to the daemon");
    let status: Status = c.call_as(Command::Status).unwrap();
    assert_eq!(status.ports.len(), 2);
    assert_eq!(status.pid, pid);
    let stage = StageSpec { id: "web".into(), filter: "tcp port 80".into(), format: FilterFormat::Tcpdump, section: None, action: Action::Drop };
    let r: SwapReport = c.call_as(Command::StageAdd { port: "a".into(), stage, position: Some(0) }).unwrap();
    assert_eq!(r.stages, 2);
    let bad = StageSpec { id: "bad".into(), filter: "udp port".into(), format: FilterFormat::Tcpdump, section: None, action: Action::Drop };
    match c.call(Command::StageAdd { port: "a".into(), stage: bad, position: None }) {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Rejected, "{e}"),
        other => panic!("a bad filter was accepted: {other:?}"),
    }
    let stats: StatsReply = c.call_as(Command::Stats { reset: true }).unwrap();
    assert_eq!(stats.queues.len(), 2, "{stats:?}");
    assert_eq!(stats.steering.len(), 2, "{stats:?}");
    assert!(stats.stages.iter().any(|s| s.port == "a" && s.id == "dns"), "{stats:?}");
    let _: HistogramReply = c.call_as(Command::Histogram { reset: false }).unwrap();
    let out = sluice(&["ctl", "-s", sock.to_str().unwrap(), "pipeline", "-p", "a"]);
    let listing = text(&out.stdout);
    assert!(listing.contains("web") && listing.contains("dns"), "{listing}{}", text(&out.stderr));

    let body = topo
        .dut
        .run_in(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9464").expect("metrics listener");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("sluice_stage_packets_total{port=\"a\",stage=\"web\"}"), "{body}");
    assert!(body.contains("sluice_steer_seen_total{interface=\"dut-a0\"}"), "{body}");

    // SIGHUP reloads the (unchanged) file as nobody; the daemon keeps running.
    assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let _: Status = c.call_as(Command::Status).unwrap();
    let r: ReloadReport = c.call_as(Command::Reload).unwrap();
    assert!(r.changes.iter().any(|l| l.starts_with("firewall: 2 rules from")), "{r:?}");
    let fw: FwStatsReply = c.call_as(Command::FwStats).unwrap();
    assert_eq!(fw.rules.iter().map(|r| (r.rule.as_str(), r.kernel_on.len())).collect::<Vec<_>>(), [("k", 2), ("u", 0), ("default", 0)]);

    // Adding a port needs the privileges the daemon gave up: the reload is refused at the new
    // interface, and nothing changes.
    topo.dut
        .ip(&["link", "add", "dut-c0", "numrxqueues", "1", "numtxqueues", "1", "type", "veth", "peer", "name", "dut-c1", "numrxqueues", "1", "numtxqueues", "1"])
        .unwrap();
    topo.dut.ip(&["link", "set", "dut-c0", "up"]).unwrap();
    let text_before = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text_before}[[port]]\nname = 'c'\ninterface = 'dut-c0'\naction = 'drop'\n")).unwrap();
    match c.call(Command::Reload) {
        Err(ClientError::Server(e)) => assert!(e.code == ErrorCode::Rejected && e.message.contains("dut-c0"), "{e}"),
        other => panic!("a port was added without privileges: {other:?}"),
    }
    let status: Status = c.call_as(Command::Status).unwrap();
    assert_eq!((status.ports.len(), status.workers), (2, 1));
    assert!(!topo.dut.ip(&["-d", "link", "show", "dev", "dut-c0"]).unwrap().contains("prog/xdp"));
    let stats: StatsReply = c.call_as(Command::Stats { reset: false }).unwrap();
    assert_eq!((stats.queues.len(), stats.steering.len()), (2, 2), "{stats:?}");
    std::fs::write(&config, text_before).unwrap();
    drop(c);

    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "sluice did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = daemon.0.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "exit {status}: {err}");
    assert!(err.contains("dropped privileges"), "{err}");
    assert!(err.contains("config reloaded") && !err.contains("reload refused"), "SIGHUP reload as nobody: {err}");
    for ifname in ["dut-a0", "dut-b0"] {
        let link = topo.dut.ip(&["-d", "link", "show", "dev", ifname]).unwrap();
        assert!(!link.contains("prog/xdp"), "{ifname} still has an XDP program: {link}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[metrics] listen` alone (no control socket) still starts the controller's listener; and a
/// stage sees the real ingress ifindex: it matches only packets whose `ingress_ifindex` is the
/// DUT port's interface index, and it counts the client's datagrams.
#[test]
fn metrics_without_a_control_socket_and_filters_see_the_ingress_ifindex() {
    use sluice::testbed::netns::{Topology, TopologyOpts, privileged};
    if !privileged("metrics_without_a_control_socket_and_filters_see_the_ingress_ifindex") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "mx".into(), ..Default::default() }).expect("topology");
    let dir = std::env::temp_dir().join(format!("sluice-mx-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluice.toml");
    let program = format!("r0 = 0\nr2 = *(u32 *)(r1 + 12)\nif r2 != {} goto +1\nr0 = 1\nexit\n", topo.dut_a.ifindex);
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = '9465'\n[dataplane]\ncores = [0]\n\
             [[port]]\nname = 'a'\ninterface = 'dut-a0'\naction = 'forward'\nforward_to = 'b'\n\
             [[port.stage]]\nid = 'ifx'\nformat = 'asm'\nfilter = '''\n{program}'''\naction = 'count'\n\
             [[port]]\nname = 'b'\ninterface = 'dut-b0'\naction = 'forward'\nforward_to = 'a'\n"
        ),
    )
    .unwrap();
    let child = topo
        .dut
        .exec([env!("CARGO_BIN_EXE_sluice"), "run", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice");
    let mut daemon = Daemon(child);
    let scrape = || {
        topo.dut
            .run_in(|| {
                let mut s = std::net::TcpStream::connect("127.0.0.1:9465").ok()?;
                s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
                let mut out = String::new();
                s.read_to_string(&mut out).ok()?;
                Some(out)
            })
            .unwrap()
    };
    let counted = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("sluice_stage_packets_total{port=\"a\",stage=\"ifx\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let started = Instant::now();
    while scrape().is_none() {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            let mut err = String::new();
            let _ = daemon.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("sluice exited with {status}: {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no metrics listener without a control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dst = std::net::SocketAddrV4::new(topo.server_if.addr.expect("server addr"), 9);
    let started = Instant::now();
    let matched = loop {
        topo.client
            .run_in(|| {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..5 {
                    // Until ARP resolves through the DUT, sends may be refused: keep trying.
                    let _ = s.send_to(b"ifindex", dst);
                }
            })
            .unwrap();
        if let Some(n) = scrape().as_deref().and_then(counted).filter(|&n| n > 0) {
            break n;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the ifindex stage never matched: {:?}", scrape());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(matched > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `capture_start` with a `filter` captures the port's matching frames without any `sample`
/// stage, writes them through the project's pcap writer (tcpdump reads the file), and leaves the
/// pipeline alone: the user's stage keeps counting every frame and no swap happens.
#[test]
fn a_filtered_capture_takes_matching_frames_without_touching_the_pipeline() {
    use sluice::testbed::netns::{CLIENT_MAC, SERVER_MAC, Topology, TopologyOpts, privileged};
    if !privileged("a_filtered_capture_takes_matching_frames_without_touching_the_pipeline") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "cap".into(), ..Default::default() }).expect("topology");
    let dir = std::env::temp_dir().join(format!("sluice-cap-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let sock = dir.join("ctl.sock");
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[control]\nsocket = '{}'\n[dataplane]\ncores = [0]\n\
             [[port]]\nname = 'a'\ninterface = 'dut-a0'\naction = 'forward'\nforward_to = 'b'\n\
             [[port.stage]]\nid = 'udp'\nfilter = 'udp'\naction = 'count'\n\
             [[port]]\nname = 'b'\ninterface = 'dut-b0'\naction = 'forward'\nforward_to = 'a'\n",
            sock.display()
        ),
    )
    .unwrap();
    let child = topo
        .dut
        .exec([env!("CARGO_BIN_EXE_sluice"), "run", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start sluice");
    let _daemon = Daemon(child);
    let started = Instant::now();
    let mut c = loop {
        match Client::connect(&sock) {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the daemon's control socket never came up: {e}"),
        }
    };
    let pcap_path = dir.join("dns.pcap");
    let bad = CaptureSpec { path: pcap_path.clone(), port: Some("a".into()), limit: None, snaplen: None, filter: Some("udp port".into()) };
    match c.call(Command::CaptureStart(bad)) {
        Err(ClientError::Server(e)) => assert!(e.code == ErrorCode::Rejected && e.message.contains("capture filter `udp port`"), "{e}"),
        other => panic!("a bad capture filter was accepted: {other:?}"),
    }
    assert!(!pcap_path.exists(), "a refused capture created its file");
    let spec = CaptureSpec { path: pcap_path.clone(), port: Some("a".into()), limit: None, snaplen: None, filter: Some("udp dst port 7000".into()) };
    let info: CaptureInfo = c.call_as(Command::CaptureStart(spec)).unwrap();
    assert_eq!((info.running, info.filter.as_deref()), (true, Some("udp dst port 7000")));

    let (src, dst) = (topo.client_if.addr.expect("client addr"), topo.server_if.addr.expect("server addr"));
    topo.client
        .run_in(|| {
            let mut cap = pcap::Capture::from_device(topo.client_if.name.as_str()).and_then(|c| c.open()).expect("open AF_PACKET");
            for i in 0..40u16 {
                let mut f = Vec::new();
                etherparse::PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC)
                    .ipv4(src.octets(), dst.octets(), 64)
                    .udp(9000, 7000 + i % 2)
                    .write(&mut f, &i.to_be_bytes())
                    .unwrap();
                cap.sendpacket(f).expect("send");
            }
        })
        .expect("enter client");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.call_as::<Status>(Command::Status).unwrap().capture.is_none_or(|c| c.packets < 20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let info: CaptureInfo = c.call_as(Command::CaptureStop).unwrap();
    assert_eq!((info.packets, info.running), (20, false), "{info:?}");

    let mut reader = sluice::pcapio::Reader::open(&pcap_path).expect("open the capture");
    let packets = reader.read_all().expect("read the capture");
    assert_eq!(packets.len(), 20);
    for p in &packets {
        let dport = u16::from_be_bytes([p.data[36], p.data[37]]);
        assert_eq!(dport, 7000, "a frame the filter does not match was captured");
    }
    let out = std::process::Command::new("tcpdump").args(["-nr"]).arg(&pcap_path).output().expect("run tcpdump");
    assert!(out.status.success(), "tcpdump: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().filter(|l| l.contains(".7000:")).count(), 20, "{}", text(&out.stdout));

    // The pipeline was never swapped and its stage saw every frame.
    let list: Vec<PipelineInfo> = c.call_as(Command::PipelineList { port: Some("a".into()) }).unwrap();
    assert_eq!((list[0].generation, list[0].stages.len()), (1, 1), "{list:?}");
    assert_eq!((list[0].stages[0].spec.id.as_str(), list[0].stages[0].packets), ("udp", 40), "{list:?}");
}
