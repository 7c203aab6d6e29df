//! Giving up root once the dataplane is set up: becoming the configured `user`/`group` while
//! keeping only the named capabilities.
//!
//! What needs privilege happens before this (attaching XDP programs, creating AF_XDP sockets and
//! their UMEM, binding the control socket). What runs afterwards — packet I/O on sockets already
//! open, map lookups on map descriptors already held, closing bpf_links at shutdown — needs no
//! capability on Linux 6.x, so the daemon normally keeps none; [`KEEP_DEFAULT`] is that set.
//!
//! uid and gid changes go through glibc, which applies them to every thread of the process.
//! Capabilities are per thread: the calling thread keeps `keep`, every other thread loses all
//! of its capabilities with the uid change.

use std::ffi::CString;
use std::fmt;

/// The capabilities the daemon keeps after dropping privileges. Empty: see the module docs.
pub const KEEP_DEFAULT: &[Capability] = &[];

/// A Linux capability the daemon may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    NetAdmin,
    NetRaw,
    IpcLock,
    SysAdmin,
    Bpf,
}

impl Capability {
    fn number(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
            Capability::IpcLock => 14,
            Capability::SysAdmin => 21,
            Capability::Bpf => 39,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::IpcLock => "CAP_IPC_LOCK",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Bpf => "CAP_BPF",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("user `{0}` does not exist")]
    NoUser(String),
    #[error("group `{0}` does not exist")]
    NoGroup(String),
    #[error("look up `{name}`: {source}")]
    Lookup { name: String, source: std::io::Error },
    #[error("drop privileges to {who}: {step}: {source}")]
    Drop { who: String, step: &'static str, source: std::io::Error },
    #[error("drop privileges to {who}: {what}")]
    Check { who: String, what: String },
}

/// The user and group to become, resolved from names (or numeric ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.user, self.uid, self.gid)
    }
}

/// Resolves `user` and `group` (default: the user's primary group) through NSS.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, PrivError> {
    let (uid, primary) = match lookup_user(user)? {
        Some(ids) => ids,
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => return Err(PrivError::NoUser(user.to_owned())),
        },
    };
    let gid = match group {
        None => primary,
        Some(g) => match lookup_group(g)? {
            Some(gid) => gid,
            None => g.parse::<u32>().map_err(|_| PrivError::NoGroup(g.to_owned()))?,
        },
    };
    Ok(Identity { user: user.to_owned(), uid, gid })
}

fn c_name(name: &str) -> Result<CString, PrivError> {
    CString::new(name).map_err(|_| PrivError::NoUser(name.to_owned()))
}

fn lookup_user(name: &str) -> Result<Option<(u32, u32)>, PrivError> {
    let cname = c_name(name)?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids) for getpwnam_r to fill.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to live memory of the stated size; on success `result`
        // points at `pwd`, whose string fields point into `buf`, which we do not read.
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some((pwd.pw_uid, pwd.pw_gid))),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(PrivError::Lookup { name: name.to_owned(), source: std::io::Error::from_raw_os_error(e) }),
        }
    }
}

fn lookup_group(name: &str) -> Result<Option<u32>, PrivError> {
    let cname = CString::new(name).map_err(|_| PrivError::NoGroup(name.to_owned()))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `group` for getgrnam_r to fill.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `lookup_user`.
        let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(grp.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(PrivError::Lookup { name: name.to_owned(), source: std::io::Error::from_raw_os_error(e) }),
        }
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Becomes `id`, keeping `keep` (effective and permitted) on the calling thread and nothing in
/// the bounding set beyond it; also sets no_new_privs. Checked afterwards: getting root back
/// must fail.
pub fn drop_to(id: &Identity, keep: &[Capability]) -> Result<(), PrivError> {
    let who = id.to_string();
    let fail = |step: &'static str| PrivError::Drop { who: who.clone(), step, source: std::io::Error::last_os_error() };
    let mask: u64 = keep.iter().fold(0, |m, c| m | 1 << c.number());

    // Bounding set first (needs CAP_SETPCAP, which goes with the uid change below).
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(40);
    for cap in 0..=last {
        if mask & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(fail("drop from the bounding set"));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(fail("keep capabilities across setuid"));
    }
    let groups = [id.gid];
    // SAFETY: `groups` outlives the call and holds exactly the one gid we pass.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(fail("setgroups"));
    }
    // SAFETY: setgid/setuid take plain integers; glibc applies them to every thread.
    if unsafe { libc::setgid(id.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(id.uid) } != 0 {
        return Err(fail("setuid"));
    }
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        CapData { effective: mask as u32, permitted: mask as u32, inheritable: 0 },
        CapData { effective: (mask >> 32) as u32, permitted: (mask >> 32) as u32, inheritable: 0 },
    ];
    // SAFETY: capset reads one header and, for version 3, two data structs; both are live and
    // laid out as the kernel's `__user_cap_header_struct`/`__user_cap_data_struct`.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(fail("capset"));
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } != 0 {
        return Err(fail("reset keepcaps"));
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(fail("set no_new_privs"));
    }
    // SAFETY: argument-less queries; setuid(0) is expected to fail and changes nothing then.
    let (uid, euid, gid, regained) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), id.uid != 0 && libc::setuid(0) == 0) };
    if uid != id.uid || euid != id.uid || gid != id.gid || regained {
        return Err(PrivError::Check { who, what: format!("still uid {uid}/euid {euid}/gid {gid}, root regained: {regained}") });
    }
    Ok(())
}

/// The calling thread's effective capabilities, from /proc (for logs and tests).
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

impl PrivError {
    /// Whether the error is about the config (a name that does not resolve) rather than the
    /// system.
    pub fn is_config(&self) -> bool {
        matches!(self, PrivError::NoUser(_) | PrivError::NoGroup(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_resolve() {
        let root = resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let nobody = resolve("nobody", Some("nogroup")).unwrap();
        assert_eq!(nobody.uid, 65534);
        assert_eq!(nobody.gid, 65534);
        assert_eq!(resolve("4242", Some("4343")).unwrap(), Identity { user: "4242".into(), uid: 4242, gid: 4343 });
        assert!(matches!(resolve("no-such-user-x", None), Err(PrivError::NoUser(_))));
        assert!(matches!(resolve("root", Some("no-such-group-x")), Err(PrivError::NoGroup(_))));
    }

    const CHILD: &str = "SLUICE_PRIVDROP_CHILD";

    /// Runs in a child process (this test binary re-executed for this one test), since a
    /// process that dropped root cannot get it back.
    #[test]
    fn drop_keeps_only_the_named_capabilities() {
        if std::env::var_os(CHILD).is_some() {
            let nobody = resolve("nobody", None).unwrap();
            drop_to(&nobody, &[Capability::NetRaw]).unwrap();
            assert_eq!(effective_caps(), Some(1 << 13));
            // Another thread created now inherits the calling thread's capabilities.
            let other = std::thread::spawn(effective_caps).join().unwrap();
            assert_eq!(other, Some(1 << 13));
            assert!(std::fs::read_to_string("/proc/thread-self/status").unwrap().contains("NoNewPrivs:\t1"));
            println!("privdrop-child-ok");
            return;
        }
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "must run as root under CI=true");
            eprintln!("skipping drop_keeps_only_the_named_capabilities: needs root");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "privdrop::tests::drop_keeps_only_the_named_capabilities", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("privdrop-child-ok"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
}
