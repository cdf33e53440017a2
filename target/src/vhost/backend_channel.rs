//! The backend request channel (VHOST_USER_PROTOCOL_F_BACKEND_REQ): the
//! socket the front-end hands over with SET_BACKEND_REQ_FD, on which the
//! back-end sends VHOST_USER_BACKEND_CONFIG_CHANGE_MSG after a resize, so
//! the front-end re-reads the config space and raises the guest's
//! config-change interrupt (QEMU's vhost-user-blk does).
//!
//! The vhost crate (0.18) takes that socket for its own `Backend`, which
//! sends no config-change message and exposes no socket. So the control
//! thread peeks at each message before the crate reads it: when it is
//! SET_BACKEND_REQ_FD, peeking with room for the passed descriptor gives us
//! a duplicate of it (the kernel installs the passed files on every read of
//! the message, a peek included), and the crate then reads the same message
//! as usual.

use std::io::{self, Write};
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// vhost-user front-end request code of SET_BACKEND_REQ_FD (spec, "Front-end
/// message types").
const SET_BACKEND_REQ_FD: u32 = 21;
/// Back-end request code of CONFIG_CHANGE_MSG ("Back-end message types").
const CONFIG_CHANGE_MSG: u32 = 2;
/// Header flags: protocol version 1, no reply wanted (the control thread
/// that would read the reply is the one serving the front-end's GET_CONFIG
/// in answer to this message).
const VERSION_1: u32 = 0x1;
/// A message header: request, flags, payload size (all u32, little endian).
const HEADER_LEN: usize = 12;
/// Most descriptors one vhost-user message carries (the spec's limit,
/// SET_MEM_TABLE's 8 regions): room for all, so none is left half-received.
const MAX_FDS: usize = 8;

/// If the next message waiting on `fd` is SET_BACKEND_REQ_FD, a duplicate
/// of the socket it carries. Never consumes anything from `fd`.
pub fn peek_backend_req_fd(fd: RawFd) -> Option<UnixStream> {
    let mut hdr = [0u8; HEADER_LEN];
    // First the header alone, without room for descriptors: nothing is
    // installed in this process for other messages.
    // SAFETY: `hdr` is a writable buffer of the length passed.
    let n = unsafe {
        libc::recv(
            fd,
            hdr.as_mut_ptr().cast(),
            HEADER_LEN,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n != HEADER_LEN as isize
        || u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) != SET_BACKEND_REQ_FD
    {
        return None;
    }
    let fds = peek_fds(fd, &mut hdr).ok()?;
    let mut fds = fds.into_iter();
    let (Some(sock), None) = (fds.next(), fds.next()) else {
        // Not the one descriptor the message must carry: the crate refuses
        // it; the duplicates are closed here.
        return None;
    };
    Some(UnixStream::from(sock))
}

/// Peeks at the message on `fd` with room for its descriptors, and returns
/// the duplicates the kernel installed.
fn peek_fds(fd: RawFd, hdr: &mut [u8; HEADER_LEN]) -> io::Result<Vec<OwnedFd>> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;
    // u64 words: cmsghdr needs its alignment.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: HEADER_LEN,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `iov` and `control`, both alive and of the
    // lengths given.
    let n = unsafe {
        libc::recvmsg(
            fd,
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk the control
    // buffer it describes, bounded by msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the control buffer (CMSG_FIRSTHDR
        // and CMSG_NXTHDR return such a pointer or null).
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) only computes a size.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (h.cmsg_len as usize).saturating_sub(header) / size_of::<RawFd>();
            // SAFETY: the data of an SCM_RIGHTS header is `count` fds.
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count`, inside the header's data; the fds were
                // installed in this process for us and are owned by nobody else.
                out.push(unsafe { OwnedFd::from_raw_fd(data.add(i).read_unaligned()) });
            }
        }
        // SAFETY: `msg` and `c` as above.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    Ok(out)
}

/// Sends CONFIG_CHANGE_MSG on the backend channel.
pub fn send_config_change(sock: &mut UnixStream) -> io::Result<()> {
    let mut msg = [0u8; HEADER_LEN];
    msg[0..4].copy_from_slice(&CONFIG_CHANGE_MSG.to_le_bytes());
    msg[4..8].copy_from_slice(&VERSION_1.to_le_bytes());
    sock.write_all(&msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    /// Sends a vhost-user header with `request` and `fds` attached.
    fn send_with_fds(sock: &UnixStream, request: u32, fds: &[RawFd]) {
        let mut hdr = [0u8; HEADER_LEN];
        hdr[0..4].copy_from_slice(&request.to_le_bytes());
        hdr[4..8].copy_from_slice(&VERSION_1.to_le_bytes());
        let bytes = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut iov = libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: HEADER_LEN,
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty value.
        let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds one header with `bytes` of data.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
        // SAFETY: `msg` points at live buffers of the lengths given.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
        assert_eq!(n, HEADER_LEN as isize);
    }

    #[test]
    fn peek_finds_the_channel_and_leaves_the_message() {
        let (front, back) = UnixStream::pair().unwrap();
        let (mut chan_front, chan_back) = UnixStream::pair().unwrap();
        send_with_fds(&front, SET_BACKEND_REQ_FD, &[chan_back.as_raw_fd()]);
        drop(chan_back);
        let mut dup = peek_backend_req_fd(back.as_raw_fd()).expect("channel");
        // The message is still there for the crate to read.
        let mut hdr = [0u8; HEADER_LEN];
        (&back).read_exact(&mut hdr).unwrap();
        assert_eq!(
            u32::from_le_bytes(hdr[0..4].try_into().unwrap()),
            SET_BACKEND_REQ_FD
        );
        send_config_change(&mut dup).unwrap();
        let mut got = [0u8; HEADER_LEN];
        chan_front.read_exact(&mut got).unwrap();
        assert_eq!(
            u32::from_le_bytes(got[0..4].try_into().unwrap()),
            CONFIG_CHANGE_MSG
        );
        assert_eq!(u32::from_le_bytes(got[8..12].try_into().unwrap()), 0);
    }

    #[test]
    fn other_messages_are_left_alone() {
        let (front, back) = UnixStream::pair().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        // SET_VRING_KICK (12) carries a descriptor too.
        send_with_fds(&front, 12, &[b.as_raw_fd()]);
        assert!(peek_backend_req_fd(back.as_raw_fd()).is_none());
        // Nothing waiting: no blocking, nothing found.
        let (_f2, b2) = UnixStream::pair().unwrap();
        assert!(peek_backend_req_fd(b2.as_raw_fd()).is_none());
    }
}
