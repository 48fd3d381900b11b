//! [`ConnIo`]: one socket that a single connection task both waits on for readability and
//! writes to, without a pending read and its buffer pinned per idle connection.
//!
//! An idle WebSocket connection must not hold a read buffer: the task waits with
//! `readable()` (an io_uring poll op; no buffer), then reads whatever is there with a
//! non-blocking `recv` into the shard's shared buffer. Writes are io_uring `writev` ops of
//! every pending frame at once, straight from the shared `Bytes` (no copy).
use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

use crate::hub::conn::Outgoing;
use monoio::net::TcpStream;
use std::cell::UnsafeCell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;

/// Most iovecs handed to one `writev` (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;
/// Most frames in the direct `sendmsg` of a backlog (the rest go through `writev`).
const DIRECT_MAX: usize = 64;

pub struct ConnIo {
    stream: UnsafeCell<TcpStream>,
}

impl ConnIo {
    pub fn new(stream: TcpStream) -> Self {
        ConnIo {
            stream: UnsafeCell::new(stream),
        }
    }

    /// Wait until the socket is readable (or has hung up).
    pub fn readable(&self) -> impl Future<Output = io::Result<()>> + '_ {
        // SAFETY: a shared reference is only used by `readable` to clone the stream's
        // reference-counted fd into a poll op on its first poll; `TcpStream` has no other
        // state that a concurrent `writev` (below) touches. This is the same property monoio
        // relies on in its own `unsafe impl Split for TcpStream` (read and write halves
        // used concurrently). The connection task is the only user of this `ConnIo`.
        let s = unsafe { &*self.stream.get() };
        s.readable(false)
    }

    /// Read what is available without blocking into the spare capacity of `buf`.
    /// `Ok(0)` means the peer closed; `WouldBlock` means nothing more for now.
    pub fn recv(&self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let spare = buf.spare_capacity_mut();
        // SAFETY: `spare` is valid writable memory of `spare.len()` bytes owned by `buf`;
        // recv writes at most that many bytes and returns how many it wrote.
        let n = unsafe {
            libc::recv(
                self.raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Lingering close: send FIN after everything written (so the peer sees the server
    /// close TCP, as RFC 6455 §7.1.1 prefers), then read and discard until the peer closes
    /// too or `limit` passes. Closing with unread input would send RST, which can destroy
    /// the Close frame still in flight to the peer.
    pub async fn linger(&self, limit: std::time::Duration) {
        // SAFETY: shutdown(2) on our own open socket; no memory is involved.
        unsafe { libc::shutdown(self.raw_fd(), libc::SHUT_WR) };
        let drain = async {
            let mut scratch = BytesMut::with_capacity(4096);
            loop {
                if self.readable().await.is_err() {
                    return;
                }
                loop {
                    scratch.clear();
                    match self.recv(&mut scratch) {
                        Ok(0) => return,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    }
                }
            }
        };
        let _ = monoio::time::timeout(limit, drain).await;
    }

    fn raw_fd(&self) -> i32 {
        // SAFETY: shared access to read the fd number only.
        unsafe { &*self.stream.get() }.as_raw_fd()
    }

    /// Write what the hub queued. One frame: an io_uring `send` (at a moderate rate most
    /// wakes carry one frame, and the shard submits all its connections' sends in one
    /// `io_uring_enter`). Several frames (a backlog: the connection fell behind a fast
    /// publisher): first one non-blocking `sendmsg` (up to `DIRECT_MAX` frames);
    /// when the socket buffer has room that is the whole write, with no op to complete
    /// and no second wake of this task, and only what did not fit goes through an
    /// io_uring `writev`. Measured (loadtest/RESULTS.md §11, A/B against io_uring only):
    /// 1.2–1.6× the deliveries per second at max fan-out for the same server CPU,
    /// unchanged at 1,000 × 100 msg/s; `sendmsg` for single frames too cost ~30% more
    /// server CPU there (a syscall per frame instead of batched submissions).
    pub async fn write_out(&self, out: Outgoing) -> io::Result<usize> {
        match out {
            Outgoing::One(f) => self.write_one(f).await,
            Outgoing::Many(mut v) => {
                let total: usize = v.iter().map(Bytes::len).sum();
                let n = self.send_now(&v)?;
                if n == total {
                    return Ok(total);
                }
                consume(&mut v, n);
                self.write_many(v).await.map(|_| total)
            }
        }
    }

    /// One non-blocking `sendmsg` of `frames`; how many bytes went (0 when the socket
    /// buffer is full).
    fn send_now(&self, frames: &[Bytes]) -> io::Result<usize> {
        // On the stack: this runs once per lagging receiver per write.
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; DIRECT_MAX];
        let frames = &frames[..frames.len().min(DIRECT_MAX)];
        for (v, b) in iov.iter_mut().zip(frames) {
            *v = libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            };
        }
        let iov = &iov[..frames.len()];
        // SAFETY: a zeroed msghdr is valid (no name, no control data); it points at
        // `iov`, which lives until the call returns, and each iovec at a `Bytes` of
        // `frames` that the kernel only reads.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            libc::sendmsg(self.raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        }
    }

    async fn write_one(&self, mut frame: Bytes) -> io::Result<usize> {
        let total = frame.len();
        loop {
            // SAFETY: see `readable`: `write` only clones the fd into an op that owns the
            // buffer; this task awaits it before touching the stream again.
            let s = unsafe { &mut *self.stream.get() };
            let (res, f) = s.write(frame).await;
            let n = res?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            frame = f;
            if n == frame.len() {
                return Ok(total);
            }
            frame.advance(n);
        }
    }

    /// Write every frame, in order, with as few `writev` ops as possible.
    async fn write_many(&self, mut frames: Vec<Bytes>) -> io::Result<usize> {
        let mut total = 0;
        while !frames.is_empty() {
            let batch: Vec<Bytes> = if frames.len() > IOV_MAX {
                let rest = frames.split_off(IOV_MAX);
                std::mem::replace(&mut frames, rest)
            } else {
                std::mem::take(&mut frames)
            };
            // SAFETY: as in `write_one`.
            let s = unsafe { &mut *self.stream.get() };
            let (res, batch) = s.writev(IoVecs::new(batch)).await;
            let n = res?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            total += n;
            let mut left = batch.into_parts();
            consume(&mut left, n);
            if !left.is_empty() {
                left.append(&mut frames);
                frames = left;
            }
        }
        Ok(total)
    }
}

/// Drop the first `n` written bytes from `frames`: whole frames go, and a partial
/// write leaves the rest of a frame first.
fn consume(frames: &mut Vec<Bytes>, mut n: usize) {
    let whole = frames
        .iter()
        .take_while(|b| {
            let fits = n >= b.len();
            if fits {
                n -= b.len();
            }
            fits
        })
        .count();
    frames.drain(..whole);
    if let Some(b) = frames.first_mut() {
        b.advance(n);
    }
}

/// A list of `Bytes` as iovecs for `writev`; owns the `Bytes` so the memory outlives the op.
struct IoVecs {
    _parts: Vec<Bytes>,
    iov: Vec<libc::iovec>,
}

impl IoVecs {
    fn into_parts(self) -> Vec<Bytes> {
        self._parts
    }

    fn new(parts: Vec<Bytes>) -> Self {
        let iov = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        IoVecs { _parts: parts, iov }
    }
}

// SAFETY: `iov` points into the `Bytes` held in `_parts`, whose heap memory does not move
// and lives as long as this value; monoio keeps the value alive until the op completes.
unsafe impl IoVecBuf for IoVecs {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_drops_written_frames_and_keeps_the_rest_of_a_partial_one() {
        let mut f = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ];
        consume(&mut f, 5);
        assert_eq!(f, [Bytes::from_static(b"fg"), Bytes::from_static(b"h")]);
        consume(&mut f, 2);
        assert_eq!(f, [Bytes::from_static(b"h")]);
        consume(&mut f, 0);
        assert_eq!(f.len(), 1);
        consume(&mut f, 1);
        assert!(f.is_empty());
    }
}
