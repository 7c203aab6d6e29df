//! The controller's event loop: the unix control socket, the Prometheus HTTP listener and
//! SIGHUP, all on one `mio` poll on one thread, calling the [`Backend`] between events.
//!
//! Nothing here can stall the dataplane: workers never wait on this thread, every socket is
//! non-blocking, and every per-client resource is bounded (line length, reply backlog,
//! connection count, HTTP request size and age). A client that breaks a bound is answered with
//! an error where that is possible and dropped.
//!
//! The socket is made owner-only without a umask race: it is bound inside a fresh 0700
//! directory next to its final path, set to 0600 (and handed to the configured owner), and
//! only then renamed into place, so nobody can ever reach it with looser permissions. Every
//! accepted peer is then checked with `SO_PEERCRED`: its uid must be the daemon's or root's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

use crate::control::backend::Backend;
use crate::control::proto::{
    self, Command, ErrorCode, HistogramReply, PipelineSource, PipelineSpec, ProtoError, Request, Response, StatsReply, ToJson,
};
use crate::control::sys::{self, PeerCred};
use crate::metrics::{self, MetricsSnapshot, SteerEntryCounters};
use crate::stats::QueueSnapshot;

/// Enough for an operator's scripts and dashboards many times over; each client costs two
/// small buffers and a file descriptor.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Replies a client has not read yet, per client. The largest single reply (a 1,000-stage
/// pipeline listing) is well under it.
pub const DEFAULT_MAX_OUTPUT: usize = 4 << 20;
/// Pipeline files are stage lists; anything bigger is a mistake.
pub const MAX_PIPELINE_FILE: u64 = 1 << 20;

const LISTENER: Token = Token(0);
const METRICS: Token = Token(1);
const SIGHUP: Token = Token(2);
const FIRST_CONN: usize = 16;

/// Requests served from one client before the others get a turn.
const LINES_PER_TURN: usize = 64;
/// Concurrent scrapes; Prometheus uses one.
const MAX_HTTP_CLIENTS: usize = 32;
const MAX_HTTP_REQUEST: usize = 8 * 1024;
/// A scrape that has not completed in this long is a stuck or hostile client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the loop looks at the stop flag when nothing happens.
const TICK: Duration = Duration::from_millis(50);
/// Descriptors kept free beside the control clients: sockets, maps, listeners, scrapes.
const NOFILE_RESERVE: u64 = 1024;
/// After EMFILE/ENFILE, accepting is retried after this pause instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The control socket; `None` serves metrics only.
    pub socket: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    pub metrics: Option<SocketAddr>,
    /// Hand the socket to this uid/gid (the user the daemon drops privileges to).
    pub owner: Option<(u32, u32)>,
    pub max_clients: usize,
    pub max_output: usize,
    /// Reload the config through the backend on SIGHUP.
    pub reload_on_sighup: bool,
}

impl ServerOptions {
    pub fn new(socket: impl Into<PathBuf>) -> ServerOptions {
        ServerOptions {
            socket: Some(socket.into()),
            metrics: None,
            owner: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_output: DEFAULT_MAX_OUTPUT,
            reload_on_sighup: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {reason}")]
    Socket { path: PathBuf, reason: String },
    #[error("metrics listener {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
    #[error("install SIGHUP handler: {0}")]
    Signal(io::Error),
    #[error("control event loop: {0}")]
    Poll(io::Error),
}

/// A bound, listening control server; [`Server::run`] serves it until the stop flag is set.
/// Dropping it removes the socket file (if it is still the one it created).
pub struct Server {
    poll: Poll,
    listener: Option<UnixListener>,
    socket: Option<BoundSocket>,
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    sighup: Option<(UnixStream, signal_hook::SigId)>,
    opts: ServerOptions,
}

impl Server {
    /// Creates the socket (and the metrics listener) so that errors reach the caller before
    /// any thread starts. A stale socket file left by a killed daemon is replaced; a live one
    /// (another daemon answers) is an error.
    pub fn bind(opts: ServerOptions) -> Result<Server, ControlError> {
        // Each client is a descriptor; the usual soft limit of 1,024 would not fit the clients
        // next to the dataplane's own sockets and maps.
        let wanted = opts.max_clients as u64 + NOFILE_RESERVE;
        match sys::raise_nofile(wanted) {
            Ok(n) if n < wanted => tracing::warn!(limit = n, wanted, "open-file limit is low for the control client limit"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
        }
        let poll = Poll::new().map_err(ControlError::Poll)?;
        let (listener, socket) = match &opts.socket {
            None => (None, None),
            Some(path) => {
                let (std_listener, socket) = bind_socket(path, opts.owner)?;
                let sock_err = |e: io::Error| ControlError::Socket { path: path.clone(), reason: e.to_string() };
                std_listener.set_nonblocking(true).map_err(sock_err)?;
                let mut listener = UnixListener::from_std(std_listener);
                poll.registry().register(&mut listener, LISTENER, Interest::READABLE).map_err(ControlError::Poll)?;
                (Some(listener), Some(socket))
            }
        };

        let (metrics, metrics_addr) = match opts.metrics {
            None => (None, None),
            Some(addr) => {
                let merr = |source| ControlError::Metrics { addr, source };
                let mut l = TcpListener::bind(addr).map_err(merr)?;
                let local = l.local_addr().map_err(merr)?;
                poll.registry().register(&mut l, METRICS, Interest::READABLE).map_err(ControlError::Poll)?;
                (Some(l), Some(local))
            }
        };

        let sighup = if opts.reload_on_sighup {
            let (rx, tx) = std::os::unix::net::UnixStream::pair().map_err(ControlError::Signal)?;
            rx.set_nonblocking(true).map_err(ControlError::Signal)?;
            tx.set_nonblocking(true).map_err(ControlError::Signal)?;
            let id = signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, tx).map_err(ControlError::Signal)?;
            let mut rx = UnixStream::from_std(rx);
            poll.registry().register(&mut rx, SIGHUP, Interest::READABLE).map_err(ControlError::Poll)?;
            Some((rx, id))
        } else {
            None
        };
        tracing::info!(socket = ?opts.socket, metrics = ?metrics_addr, "control server listening");
        Ok(Server { poll, listener, socket, metrics, metrics_addr, sighup, opts })
    }

    /// The metrics listener's actual address (useful when bound to port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn socket_path(&self) -> Option<&Path> {
        self.opts.socket.as_deref()
    }

    /// Serves until `stop` is set (checked at least every 50 ms).
    pub fn run(mut self, backend: Arc<dyn Backend>, stop: &AtomicBool) -> Result<(), ControlError> {
        let mut state = Loop {
            euid: sys::effective_uid(),
            dispatcher: Dispatcher::new(backend),
            conns: HashMap::new(),
            http: HashMap::new(),
            next_token: FIRST_CONN,
            backlog: VecDeque::new(),
            accept_paused: None,
            http_paused: None,
            scratch: vec![0; 64 * 1024],
        };
        let mut events = Events::with_capacity(256);
        while !stop.load(Ordering::Relaxed) {
            let timeout = if state.backlog.is_empty() { TICK } else { Duration::ZERO };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ControlError::Poll(e));
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => {
                        if let Some(l) = &self.listener {
                            state.accept_control(l, &self.poll, &self.opts);
                        }
                    }
                    METRICS => {
                        if let Some(l) = &self.metrics {
                            state.accept_http(l, &self.poll);
                        }
                    }
                    SIGHUP => {
                        if let Some((rx, _)) = &mut self.sighup {
                            state.on_sighup(rx);
                        }
                    }
                    token => state.on_event(token, &self.poll, &self.opts),
                }
            }
            let now = Instant::now();
            if state.accept_paused.is_some_and(|t| now >= t) {
                state.accept_paused = None;
                if let Some(l) = &self.listener {
                    state.accept_control(l, &self.poll, &self.opts);
                }
            }
            if state.http_paused.is_some_and(|t| now >= t) {
                state.http_paused = None;
                if let Some(l) = &self.metrics {
                    state.accept_http(l, &self.poll);
                }
            }
            let turn: Vec<Token> = state.backlog.drain(..).collect();
            for token in turn {
                state.on_event(token, &self.poll, &self.opts);
            }
            state.expire_http(&self.poll, now);
        }
        tracing::info!(clients = state.conns.len(), "control server stopped");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((_, id)) = self.sighup.take() {
            signal_hook::low_level::unregister(id);
        }
        if let Some(s) = &self.socket {
            s.remove();
        }
    }
}

/// The socket file this server created, identified by inode so that a daemon that has been
/// replaced never deletes its successor's socket.
struct BoundSocket {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Longest unix socket path (sun_path holds 108 bytes with the terminating NUL).
const SUN_PATH_MAX: usize = 107;

fn bind_socket(path: &Path, owner: Option<(u32, u32)>) -> Result<(std::os::unix::net::UnixListener, BoundSocket), ControlError> {
    let fail = |reason: String| ControlError::Socket { path: path.to_owned(), reason };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Err(fail("is not a file path".into()));
    };
    clear_stale(path).map_err(fail)?;

    // A private directory beside the final path: the rename below then stays within one file
    // system, and nobody else can reach the socket while it still has the umask's mode.
    let staging = parent.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let staged = staging.join("s");
    if staged.as_os_str().len() > SUN_PATH_MAX {
        return Err(fail(format!("the path is too long for a unix socket (at most {} bytes)", SUN_PATH_MAX - (staged.as_os_str().len() - path.as_os_str().len()))));
    }
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| fail(format!("create {}: {e}", staging.display())))?;
    let result = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&staged).map_err(|e| format!("bind: {e}"))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).map_err(|e| format!("chmod 0600: {e}"))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&staged, Some(uid), Some(gid)).map_err(|e| format!("chown {uid}:{gid}: {e}"))?;
        }
        std::fs::rename(&staged, path).map_err(|e| format!("move into place: {e}"))?;
        let m = std::fs::symlink_metadata(path).map_err(|e| format!("stat: {e}"))?;
        Ok((listener, BoundSocket { path: path.to_owned(), dev: m.dev(), ino: m.ino() }))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result.map_err(fail)
}

/// Removes a socket file nobody listens on; refuses to touch anything else.
fn clear_stale(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("stat: {e}")),
    };
    if !m.file_type().is_socket() {
        return Err("exists and is not a socket; refusing to replace it".into());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err("another process is serving this socket (is sluice already running?)".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| format!("remove stale socket: {e}"))
        }
        // Left by a daemon that dropped privileges and so could not unlink it, while we lack
        // CAP_DAC_OVERRIDE to probe it: say so rather than guess whether it is live.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(format!(
            "probe existing socket: {e}; if no sluice is running, remove it (a daemon that dropped privileges cannot)"
        )),
        Err(e) => Err(format!("probe existing socket: {e}")),
    }
}

/// One control client.
struct Conn {
    stream: UnixStream,
    peer: PeerCred,
    /// Bytes received and not yet parsed into requests.
    input: Vec<u8>,
    /// Replies not yet written; `written` of them already went out.
    output: Vec<u8>,
    written: usize,
    /// Close once `output` is flushed (peer hung up, or a line was too long).
    closing: bool,
}

struct HttpConn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    started: Instant,
    responded: bool,
}

/// What the event loop keeps between events.
struct Loop {
    euid: u32,
    dispatcher: Dispatcher,
    conns: HashMap<Token, Conn>,
    http: HashMap<Token, HttpConn>,
    next_token: usize,
    /// Clients that used up their turn with requests still buffered.
    backlog: VecDeque<Token>,
    accept_paused: Option<Instant>,
    http_paused: Option<Instant>,
    scratch: Vec<u8>,
}

enum Fate {
    Keep,
    Close(&'static str),
}

impl Loop {
    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONN);
        t
    }

    fn accept_control(&mut self, listener: &UnixListener, poll: &Poll, opts: &ServerOptions) {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors: the pending connection stays queued; try again soon
                    // rather than spinning on a listener that stays readable.
                    tracing::warn!(error = %e, "control socket: accept failed; pausing accepts");
                    self.accept_paused = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            };
            let peer = match sys::peer_cred(&stream) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot read peer credentials; refused");
                    continue;
                }
            };
            if peer.uid != self.euid && peer.uid != 0 {
                tracing::warn!(pid = peer.pid, uid = peer.uid, "control socket: refused a client that is neither root nor the daemon's user");
                refuse(&mut stream, ErrorCode::PermissionDenied, "permission denied: only root and the daemon's user may use this socket");
                continue;
            }
            if self.conns.len() >= opts.max_clients {
                tracing::warn!(pid = peer.pid, limit = opts.max_clients, "control socket: refused a client over the connection limit");
                refuse(&mut stream, ErrorCode::Busy, &format!("too many clients (limit {})", opts.max_clients));
                continue;
            }
            let token = self.token();
            if let Err(e) = poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                tracing::warn!(error = %e, "control socket: cannot watch a new client; dropped");
                continue;
            }
            tracing::debug!(pid = peer.pid, uid = peer.uid, "control client connected");
            self.conns.insert(token, Conn { stream, peer, input: Vec::new(), output: Vec::new(), written: 0, closing: false });
        }
    }

    fn on_event(&mut self, token: Token, poll: &Poll, opts: &ServerOptions) {
        if self.http.contains_key(&token) {
            self.on_http(token, poll);
            return;
        }
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        match self.service(&mut conn, token, opts) {
            Fate::Keep => {
                self.conns.insert(token, conn);
            }
            Fate::Close(why) => {
                if why != "hung up" {
                    tracing::info!(pid = conn.peer.pid, reason = why, "control client dropped");
                }
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }

    /// Answers what the client has sent, reads more while it has its turn, and writes.
    fn service(&mut self, conn: &mut Conn, token: Token, opts: &ServerOptions) -> Fate {
        let mut served = 0;
        let mut eof = false;
        loop {
            // Answer complete lines first, so `input` never holds more than one line's worth.
            while let Some(nl) = conn.input.iter().position(|&b| b == b'\n') {
                if conn.closing {
                    break;
                }
                if served == LINES_PER_TURN {
                    self.backlog.push_back(token);
                    return flush(conn, opts);
                }
                let line: Vec<u8> = conn.input.drain(..=nl).collect();
                if line.len() > proto::MAX_LINE {
                    too_long(conn);
                    break;
                }
                self.answer(conn, &line[..nl]);
                served += 1;
                if let Fate::Close(why) = check_output(conn, opts) {
                    return Fate::Close(why);
                }
            }
            if conn.closing || eof {
                break;
            }
            if conn.input.len() > proto::MAX_LINE {
                too_long(conn);
                break;
            }
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => eof = true,
                Ok(n) => conn.input.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Fate::Close("read failed"),
            }
        }
        if eof && !conn.closing {
            // A last request without its newline still gets its answer.
            let rest = std::mem::take(&mut conn.input);
            self.answer(conn, &rest);
            conn.closing = true;
        }
        match flush(conn, opts) {
            Fate::Keep if conn.closing && conn.written == conn.output.len() => Fate::Close(if eof { "hung up" } else { "line too long" }),
            fate => fate,
        }
    }

    fn answer(&mut self, conn: &mut Conn, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Blank lines (a stray Enter in socat) are no request and get no reply, so replies
        // stay one-to-one with requests.
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let response = match Request::parse(line) {
            Ok(req) => self.dispatcher.handle(req, conn.peer),
            Err((id, e)) => {
                tracing::debug!(pid = conn.peer.pid, error = %e, "control request refused");
                Response::err(id, e)
            }
        };
        conn.output.extend_from_slice(response.to_line().as_bytes());
    }

    fn accept_http(&mut self, listener: &TcpListener, poll: &Poll) {
        loop {
            let (mut stream, addr) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed; pausing accepts");
                    self.http_paused = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            };
            if self.http.len() >= MAX_HTTP_CLIENTS {
                tracing::debug!(%addr, "metrics: too many scrapes at once; closed");
                continue;
            }
            let token = self.token();
            if poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_err() {
                continue;
            }
            self.http.insert(token, HttpConn { stream, input: Vec::new(), output: Vec::new(), written: 0, started: Instant::now(), responded: false });
        }
    }

    fn on_http(&mut self, token: Token, poll: &Poll) {
        let Some(mut c) = self.http.remove(&token) else {
            return;
        };
        let done = loop {
            // Reading goes on after the response (and discards): closing a TCP socket with
            // unread input resets the connection, and the client might lose the response.
            match c.stream.read(&mut self.scratch) {
                Ok(0) => break true,
                Ok(_) if c.responded => {}
                Ok(n) => {
                    c.input.extend_from_slice(&self.scratch[..n]);
                    if let Some(reply) = http_reply(&c.input, &*self.dispatcher.backend) {
                        c.output = reply;
                        c.responded = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        let mut finished = done;
        if c.responded {
            loop {
                match c.stream.write(&c.output[c.written..]) {
                    Ok(n) => {
                        c.written += n;
                        if c.written == c.output.len() {
                            finished = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        finished = true;
                        break;
                    }
                }
            }
        }
        if finished {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            let _ = poll.registry().deregister(&mut c.stream);
        } else {
            self.http.insert(token, c);
        }
    }

    fn expire_http(&mut self, poll: &Poll, now: Instant) {
        self.http.retain(|_, c| {
            let keep = now.duration_since(c.started) < HTTP_TIMEOUT;
            if !keep {
                let _ = poll.registry().deregister(&mut c.stream);
            }
            keep
        });
    }

    fn on_sighup(&mut self, rx: &mut UnixStream) {
        let mut buf = [0u8; 64];
        // Several signals before we got here make one reload.
        while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
        match self.dispatcher.backend.reload() {
            Ok(r) if r.changes.is_empty() => tracing::info!(config = %r.config.display(), "SIGHUP: config reloaded, nothing changed"),
            Ok(r) => tracing::info!(config = %r.config.display(), changes = %r.changes.join("; "), "SIGHUP: config reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: config rejected, the running one stays"),
        }
    }
}

/// Best effort: the line is short enough to fit any socket buffer, and a client that cannot
/// take it loses nothing it was owed.
fn refuse(stream: &mut UnixStream, code: ErrorCode, message: &str) {
    let _ = stream.write_all(Response::err(Value::Null, ProtoError::new(code, message)).to_line().as_bytes());
}

fn too_long(conn: &mut Conn) {
    let e = ProtoError::new(ErrorCode::LineTooLong, format!("request line exceeds {} bytes; closing the connection", proto::MAX_LINE));
    conn.output.extend_from_slice(Response::err(Value::Null, e).to_line().as_bytes());
    conn.input = Vec::new();
    conn.closing = true;
}

fn check_output(conn: &Conn, opts: &ServerOptions) -> Fate {
    if conn.output.len() - conn.written > opts.max_output { Fate::Close("not reading its replies") } else { Fate::Keep }
}

fn flush(conn: &mut Conn, opts: &ServerOptions) -> Fate {
    while conn.written < conn.output.len() {
        match conn.stream.write(&conn.output[conn.written..]) {
            Ok(0) => return Fate::Close("write failed"),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Fate::Close("hung up"),
        }
    }
    if conn.written == conn.output.len() {
        conn.output.clear();
        conn.written = 0;
    } else if conn.written > opts.max_output {
        // Keep the buffer from creeping: drop what went out once it is large.
        conn.output.drain(..conn.written);
        conn.written = 0;
    }
    check_output(conn, opts)
}

/// The HTTP response to a complete request head, or `None` while the head is incomplete.
fn http_reply(input: &[u8], backend: &dyn Backend) -> Option<Vec<u8>> {
    let head_end = input.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| input.windows(2).position(|w| w == b"\n\n"));
    let Some(_) = head_end else {
        return (input.len() > MAX_HTTP_REQUEST).then(|| http_response(431, "Request Header Fields Too Large", "text/plain", b"request too large\n", false));
    };
    let first = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    Some(match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = metrics::render(&backend.metrics());
            http_response(200, "OK", metrics::CONTENT_TYPE, body.as_bytes(), method == "HEAD")
        }
        ("GET" | "HEAD", _) => http_response(404, "Not Found", "text/plain", b"not found; metrics are at /metrics\n", method == "HEAD"),
        _ => http_response(405, "Method Not Allowed", "text/plain", b"only GET and HEAD\n", false),
    })
}

fn http_response(status: u16, reason: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status == 405 { "Allow: GET, HEAD\r\n" } else { "" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Turns requests into backend calls and replies; owns the state the protocol adds on top of
/// the dataplane's monotonic counters (the `reset` baselines).
struct Dispatcher {
    backend: Arc<dyn Backend>,
    stats_base: Baseline,
    hist_base: Option<Histogram<u64>>,
}

/// Counter values at the last `stats` reset, keyed by what identifies each counter.
struct Baseline {
    at: Instant,
    queues: BTreeMap<(String, String, u32), QueueSnapshot>,
    stages: BTreeMap<(String, String), (u64, u64)>,
    steering: BTreeMap<String, SteerEntryCounters>,
    swaps: u64,
}

impl Baseline {
    fn zero() -> Baseline {
        Baseline { at: Instant::now(), queues: BTreeMap::new(), stages: BTreeMap::new(), steering: BTreeMap::new(), swaps: 0 }
    }

    fn of(m: &MetricsSnapshot) -> Baseline {
        Baseline {
            at: Instant::now(),
            queues: m.queues.iter().map(|q| ((q.port.clone(), q.interface.clone(), q.queue), q.counters)).collect(),
            stages: m.stages.iter().map(|s| ((s.port.clone(), s.id.clone()), (s.packets, s.bytes))).collect(),
            steering: m.steering.iter().map(|s| (s.interface.clone(), s.counters)).collect(),
            swaps: m.swaps,
        }
    }

    /// `m` minus the baseline. A counter that went backwards (a stage removed and re-added
    /// under the same id starts again at zero) saturates to its current value.
    fn since(&self, m: MetricsSnapshot) -> StatsReply {
        let mut queues = m.queues;
        for q in &mut queues {
            if let Some(b) = self.queues.get(&(q.port.clone(), q.interface.clone(), q.queue)) {
                q.counters = q.counters.delta(b);
            }
        }
        let mut stages = m.stages;
        for s in &mut stages {
            if let Some(&(p, b)) = self.stages.get(&(s.port.clone(), s.id.clone()))
                && s.packets >= p
                && s.bytes >= b
            {
                s.packets -= p;
                s.bytes -= b;
            }
        }
        let mut steering = m.steering;
        for s in &mut steering {
            if let Some(b) = self.steering.get(&s.interface) {
                let c = &mut s.counters;
                c.seen = c.seen.saturating_sub(b.seen);
                c.redirected = c.redirected.saturating_sub(b.redirected);
                c.passed = c.passed.saturating_sub(b.passed);
                c.dropped = c.dropped.saturating_sub(b.dropped);
            }
        }
        StatsReply { queues, stages, steering, swaps: m.swaps.saturating_sub(self.swaps), interval_secs: self.at.elapsed().as_secs() }
    }
}

impl Dispatcher {
    fn new(backend: Arc<dyn Backend>) -> Dispatcher {
        Dispatcher { backend, stats_base: Baseline::zero(), hist_base: None }
    }

    fn handle(&mut self, req: Request, peer: PeerCred) -> Response {
        let name = req.command.name();
        let mutating = !matches!(
            req.command,
            Command::Status | Command::Stats { .. } | Command::PipelineList { .. } | Command::Histogram { .. } | Command::FwStats
        );
        let started = Instant::now();
        let result = self.run(req.command);
        let us = started.elapsed().as_micros() as u64;
        match &result {
            Ok(_) if mutating => tracing::info!(pid = peer.pid, uid = peer.uid, cmd = name, us, "control command applied"),
            Err(e) if mutating => tracing::warn!(pid = peer.pid, uid = peer.uid, cmd = name, error = %e, "control command failed"),
            _ => tracing::debug!(pid = peer.pid, cmd = name, us, ok = result.is_ok(), "control command"),
        }
        match result {
            Ok(v) => Response::ok(req.id, v),
            Err(e) => Response::err(req.id, e),
        }
    }

    fn run(&mut self, command: Command) -> Result<Value, ProtoError> {
        let b = &*self.backend;
        Ok(match command {
            Command::Status => b.status()?.to_json(),
            Command::Stats { reset } => {
                let m = b.metrics();
                let next = reset.then(|| Baseline::of(&m));
                let reply = self.stats_base.since(m);
                if let Some(next) = next {
                    self.stats_base = next;
                }
                reply.to_json()
            }
            Command::PipelineList { port } => b.pipelines(port.as_deref())?.to_json(),
            Command::PipelineReplace { port, source } => {
                let spec = match source {
                    PipelineSource::Inline(spec) => spec,
                    PipelineSource::File(path) => load_pipeline_file(&path)?,
                };
                b.replace_pipeline(&port, spec)?.to_json()
            }
            Command::StageAdd { port, stage, position } => b.add_stage(&port, stage, position)?.to_json(),
            Command::StageRemove { port, id } => b.remove_stage(&port, &id)?.to_json(),
            Command::StageMove { port, id, position } => b.move_stage(&port, &id, position)?.to_json(),
            Command::PortAction { port, action } => b.set_port_action(&port, &action)?.to_json(),
            Command::Reload => b.reload()?.to_json(),
            Command::Histogram { reset } => {
                let all = b.metrics().batch_ns;
                let mut shown = all.clone();
                if let Some(base) = &self.hist_base
                    && shown.subtract(base).is_err()
                {
                    // The dataplane's histogram restarted (fewer counts than the baseline).
                    shown = all.clone();
                }
                if reset {
                    self.hist_base = Some(all);
                }
                histogram_reply(&shown).to_json()
            }
            Command::CaptureStart(spec) => b.capture_start(&spec)?.to_json(),
            Command::CaptureStop => b.capture_stop()?.to_json(),
            Command::FwStats => b.fw_stats()?.to_json(),
        })
    }
}

/// Reads a pipeline file on the controller thread: TOML, or JSON when it ends in `.json`.
pub fn load_pipeline_file(path: &Path) -> Result<PipelineSpec, ProtoError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ProtoError::new(ErrorCode::NotFound, format!("pipeline file {shown}: no such file")),
        _ => ProtoError::new(ErrorCode::Rejected, format!("pipeline file {shown}: {e}")),
    })?;
    if meta.len() > MAX_PIPELINE_FILE {
        return Err(ProtoError::new(ErrorCode::Rejected, format!("pipeline file {shown}: {} bytes is over the {MAX_PIPELINE_FILE}-byte limit", meta.len())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| ProtoError::new(ErrorCode::Rejected, format!("pipeline file {shown}: {e}")))?;
    let spec: PipelineSpec = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| ProtoError::new(ErrorCode::Rejected, format!("pipeline file {shown}: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| ProtoError::new(ErrorCode::Rejected, format!("pipeline file {shown}: {}", e.message().trim_end_matches('.'))))?
    };
    spec.validate().map_err(|e| ProtoError::new(ErrorCode::Rejected, format!("pipeline file {shown}: `{e}")))?;
    Ok(spec)
}

fn histogram_reply(h: &Histogram<u64>) -> HistogramReply {
    let empty = h.is_empty();
    let quantiles = [0.5, 0.9, 0.99, 0.999, 1.0].into_iter().map(|q| (q, if empty { 0 } else { h.value_at_quantile(q) })).collect();
    let buckets = if empty { Vec::new() } else { h.iter_log(1, 2.0).filter(|v| v.count_since_last_iteration() > 0).map(|v| (v.value_iterated_to(), v.count_since_last_iteration())).collect() };
    HistogramReply {
        unit: "ns".into(),
        count: h.len(),
        min: if empty { 0 } else { h.min() },
        max: h.max(),
        mean: h.mean(),
        stdev: h.stdev(),
        quantiles,
        buckets,
    }
}
