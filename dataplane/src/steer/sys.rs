//! The OS calls the steering loader needs and aya does not offer: the XDP bpf_link itself
//! (`BPF_LINK_CREATE` without aya's netlink fallback, `BPF_LINK_DETACH` on drop), interface
//! index, an interface's own IP addresses (`getifaddrs`), and which XDP programs an interface
//! runs (an `RTM_GETLINK` request on rtnetlink). Everything acts in the calling thread's
//! network namespace. Reply parsing is split from the socket so it is tested without root.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// `IFLA_XDP` and its nested attributes (`linux/if_link.h`); the libc crate lacks them.
const IFLA_XDP: u16 = 43;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
/// Attribute types carry NLA_F_NESTED / NLA_F_NET_BYTEORDER in their top bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
/// Our request's sequence number; the reply echoes it.
const SEQ: u32 = 1;

/// `enum bpf_cmd` and `enum bpf_attach_type` values (`linux/bpf.h`), `XDP_FLAGS_*`
/// (`linux/if_link.h`).
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_XDP: u32 = 37;
pub(super) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(super) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// bpf(2) with an attribute made of u32 fields: every command used here takes only those.
fn bpf(cmd: libc::c_long, attr: &mut [u32]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable buffer of exactly the size passed; the kernel reads (and
    // for some commands writes back) at most that many bytes and zero-extends the rest.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// An XDP program attached to an interface through a bpf_link. Dropping it detaches the program
/// at once (`BPF_LINK_DETACH`) even if a forked child still holds a copy of the descriptor; if
/// the process dies, the kernel detaches when the last copy closes.
#[derive(Debug)]
pub(super) struct XdpLink(OwnedFd);

impl XdpLink {
    /// `flags` is one of the `XDP_FLAGS_*_MODE` values.
    pub(super) fn create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<XdpLink> {
        // struct { u32 prog_fd; u32 target_ifindex; u32 attach_type; u32 flags; } link_create
        let prog_fd = u32::try_from(prog.as_raw_fd())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative program descriptor"))?;
        let mut attr = [prog_fd, ifindex, BPF_XDP, flags];
        let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
        let fd = RawFd::try_from(fd).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "link fd out of range"))?;
        // SAFETY: a successful BPF_LINK_CREATE returns a new descriptor that nothing else owns.
        Ok(XdpLink(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Drop for XdpLink {
    fn drop(&mut self) {
        // struct { u32 link_fd; } link_detach. Failure (interface already gone, which detaches
        // by itself) leaves nothing to undo: closing the descriptor next releases the link.
        let Ok(link_fd) = u32::try_from(self.0.as_raw_fd()) else { return };
        if let Err(err) = bpf(BPF_LINK_DETACH, &mut [link_fd]) {
            tracing::debug!(%err, "bpf link detach");
        }
    }
}

/// The XDP programs attached to an interface, by attach mode (kernel program ids).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpAttachment {
    /// Driver (native) mode.
    pub native: Option<u32>,
    /// Generic (skb) mode.
    pub generic: Option<u32>,
    /// Offloaded to the NIC.
    pub offloaded: Option<u32>,
}

pub(super) fn if_index(ifname: &str) -> io::Result<u32> {
    let name = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains a NUL byte"))?;
    // SAFETY: `name` is a NUL-terminated string that lives across the call; the function only
    // reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 { Err(io::Error::last_os_error()) } else { Ok(index) }
}

/// The IPv4 and IPv6 addresses assigned to `ifname` (IPv4 labels like `eth0:1` included).
pub(super) fn interface_addrs(ifname: &str) -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs stores a list head it allocated into `head`, which we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addrs = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is a non-null element of the list getifaddrs returned; the list stays
        // allocated until freeifaddrs below and nothing else mutates it.
        let ifa = unsafe { &*node };
        node = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a non-null NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes();
        let label_of_ifname =
            name.strip_prefix(ifname.as_bytes()).is_some_and(|rest| rest.is_empty() || rest[0] == b':');
        if !label_of_ifname {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose sa_family names its real
        // type; we only reinterpret it as sockaddr_in / sockaddr_in6 for those families.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                addrs.push(IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())));
            }
            libc::AF_INET6 => {
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                addrs.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; no reference
    // into the list survives this point (addresses were copied out).
    unsafe { libc::freeifaddrs(head) };
    Ok(addrs)
}

/// Asks the kernel which XDP programs `ifindex` runs.
pub(super) fn xdp_attachment(ifindex: u32) -> io::Result<XdpAttachment> {
    // SAFETY: plain socket(2) call; the returned descriptor is owned by `sock` right away.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    let request = getlink_request(ifindex);
    // SAFETY: `request` is a live buffer of `request.len()` bytes for the duration of the call.
    let sent = unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // One RTM_NEWLINK for one interface is a few KiB; 64 KiB leaves room for any driver's
    // attributes.
    let mut reply = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `reply` is a live, writable buffer of `reply.len()` bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // `n >= 0` was checked above, so the cast is lossless.
        if let Some(result) = parse_getlink_reply(&reply[..n as usize]) {
            return result;
        }
    }
}

/// `nlmsghdr` + `ifinfomsg` asking for one link by index.
fn getlink_request(ifindex: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + IFINFOMSG_LEN) as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&SEQ.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
    msg.push(libc::AF_UNSPEC as u8); // ifi_family
    msg.push(0); // pad
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&ifindex.to_ne_bytes()); // ifi_index
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
    msg
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated rtnetlink reply")
}

/// Parses one datagram of the reply: `None` if it holds nothing for our request (read on),
/// else the answer or the kernel's error.
fn parse_getlink_reply(buf: &[u8]) -> Option<io::Result<XdpAttachment>> {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at)? as usize;
        let kind = u16_at(buf, at + 4)?;
        let seq = u32_at(buf, at + 8)?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Some(Err(truncated()));
        }
        let msg = &buf[at..at + len];
        at += len.next_multiple_of(4);
        if seq != SEQ {
            continue;
        }
        if i32::from(kind) == libc::NLMSG_ERROR {
            let Some(code) = u32_at(msg, NLMSG_HDRLEN) else { return Some(Err(truncated())) };
            // The kernel reports -errno; 0 would be an ack, which RTM_GETLINK does not send.
            return Some(Err(io::Error::from_raw_os_error((code as i32).wrapping_neg())));
        }
        if kind == libc::RTM_NEWLINK {
            return Some(parse_link_attrs(msg.get(NLMSG_HDRLEN + IFINFOMSG_LEN..).unwrap_or_default()));
        }
    }
    None
}

/// Walks `rtattr`s: `{ u16 len; u16 type; payload }`, each padded to 4 bytes.
fn attrs(buf: &[u8]) -> impl Iterator<Item = io::Result<(u16, &[u8])>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + 4 > buf.len() {
            return None;
        }
        let (Some(len), Some(kind)) = (u16_at(buf, at), u16_at(buf, at + 2)) else { return None };
        let len = usize::from(len);
        if len < 4 || at + len > buf.len() {
            at = buf.len();
            return Some(Err(truncated()));
        }
        let payload = &buf[at + 4..at + len];
        at += len.next_multiple_of(4);
        Some(Ok((kind & NLA_TYPE_MASK, payload)))
    })
}

fn parse_link_attrs(buf: &[u8]) -> io::Result<XdpAttachment> {
    let mut attached = XdpAttachment::default();
    for attr in attrs(buf) {
        let (kind, payload) = attr?;
        if kind != IFLA_XDP {
            continue;
        }
        for nested in attrs(payload) {
            let (kind, payload) = nested?;
            let slot = match kind {
                IFLA_XDP_DRV_PROG_ID => &mut attached.native,
                IFLA_XDP_SKB_PROG_ID => &mut attached.generic,
                IFLA_XDP_HW_PROG_ID => &mut attached.offloaded,
                _ => continue,
            };
            *slot = u32_at(payload, 0).filter(|&id| id != 0);
        }
    }
    Ok(attached)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&4242u32.to_ne_bytes());
        out.extend_from_slice(body);
        out
    }

    fn newlink(xdp: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend(attr(3, b"dut-a\0")); // IFLA_IFNAME before the one we want
        body.extend(attr(IFLA_XDP | 0x8000, xdp)); // NLA_F_NESTED set, as the kernel sends it
        message(libc::RTM_NEWLINK, SEQ, &body)
    }

    #[test]
    fn request_is_a_getlink_for_the_index() {
        let req = getlink_request(7);
        assert_eq!(req.len(), 32);
        assert_eq!(u32_at(&req, 0), Some(32));
        assert_eq!(u16_at(&req, 4), Some(libc::RTM_GETLINK));
        assert_eq!(u32_at(&req, 20), Some(7));
    }

    #[test]
    fn reply_with_generic_program() {
        let mut xdp = attr(2, &[2]); // IFLA_XDP_ATTACHED = XDP_ATTACHED_SKB
        xdp.extend(attr(IFLA_XDP_SKB_PROG_ID, &41u32.to_ne_bytes()));
        xdp.extend(attr(4, &41u32.to_ne_bytes())); // IFLA_XDP_PROG_ID
        let got = parse_getlink_reply(&newlink(&xdp)).unwrap().unwrap();
        assert_eq!(got, XdpAttachment { native: None, generic: Some(41), offloaded: None });
    }

    #[test]
    fn reply_without_program() {
        let got = parse_getlink_reply(&newlink(&attr(2, &[0]))).unwrap().unwrap();
        assert_eq!(got, XdpAttachment::default());
    }

    #[test]
    fn kernel_error_becomes_errno() {
        let mut body = (-libc::ENODEV).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]); // the echoed request header
        let err = parse_getlink_reply(&message(libc::NLMSG_ERROR as u16, SEQ, &body)).unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn other_sequence_numbers_are_skipped_and_garbage_is_an_error() {
        assert!(parse_getlink_reply(&message(libc::RTM_NEWLINK, SEQ + 1, &[0u8; 16])).is_none());
        let mut msg = newlink(&attr(IFLA_XDP_DRV_PROG_ID, &9u32.to_ne_bytes()));
        msg.truncate(msg.len() - 3);
        assert!(parse_getlink_reply(&msg).unwrap().is_err());
        let mut bad_attr = newlink(&[]);
        let end = bad_attr.len();
        bad_attr[end - 4..end - 2].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_getlink_reply(&bad_attr).unwrap().is_err());
    }
}
