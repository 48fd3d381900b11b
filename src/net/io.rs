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
use monoio::net::TcpStream;
use std::cell::UnsafeCell;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;

/// Most iovecs handed to one `writev` (Linux `IOV_MAX`).
const IOV_MAX: usize = 1024;

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

    /// Write every frame in `frames`, in order, with as few `writev` ops as possible.
    /// On return `frames` is empty (written, or abandoned on error).
    pub async fn write_all(&self, frames: &mut Vec<Bytes>) -> io::Result<usize> {
        let mut total = 0;
        let mut start = 0;
        while start < frames.len() {
            let end = (start + IOV_MAX).min(frames.len());
            let parts: Vec<Bytes> = frames[start..end].to_vec();
            let batch = IoVecs::new(parts);
            // SAFETY: see `readable`: `writev` only clones the fd into an op; the returned
            // future owns the buffers. No other `&mut` to the stream exists while it runs
            // because this task awaits it before creating another.
            let s = unsafe { &mut *self.stream.get() };
            let (res, batch) = s.writev(batch).await;
            let mut n = res?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            total += n;
            // Advance past what was written; a partial write leaves the rest of a frame.
            let mut i = start;
            drop(batch);
            while i < end && n >= frames[i].len() {
                n -= frames[i].len();
                i += 1;
            }
            if i < end && n > 0 {
                frames[i].advance(n);
            }
            start = i;
        }
        frames.clear();
        Ok(total)
    }
}

/// A list of `Bytes` as iovecs for `writev`; owns the `Bytes` so the memory outlives the op.
struct IoVecs {
    _parts: Vec<Bytes>,
    iov: Vec<libc::iovec>,
}

impl IoVecs {
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
