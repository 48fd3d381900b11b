//! Client socket creation: source-address binding so that more than ~14k
//! connections can reach a single destination port over loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::TcpStream;

/// Parses `127.0.0.2-127.0.0.9` (an inclusive range, last octet varying) or a
/// comma-separated list of addresses / ranges.
pub fn parse_src_ips(spec: &str) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("bad address {a}"))?;
            let b: Ipv4Addr = if b.contains('.') {
                b.trim()
                    .parse()
                    .with_context(|| format!("bad address {b}"))?
            } else {
                let o = a.octets();
                Ipv4Addr::new(o[0], o[1], o[2], b.trim().parse()?)
            };
            let (ua, ub) = (u32::from(a), u32::from(b));
            if ub < ua || ub - ua > 65_536 {
                bail!("bad range {part}");
            }
            out.extend((ua..=ub).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad address {part}"))?,
            );
        }
    }
    Ok(out)
}

/// Default source addresses for a run of `conns` connections: none (kernel
/// choice) for small runs, else one loopback address per ~10k connections.
pub fn default_src_ips(conns: usize) -> Vec<IpAddr> {
    if conns <= 10_000 {
        return Vec::new();
    }
    let n = conns.div_ceil(10_000).clamp(2, 64) as u8;
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect()
}

/// Connects to `dst`, binding to `src` (port chosen at connect time thanks to
/// `IP_BIND_ADDRESS_NO_PORT`) if given; `rcvbuf` sets SO_RCVBUF before the
/// handshake (so the advertised window stays small).
pub async fn connect(
    dst: SocketAddr,
    src: Option<IpAddr>,
    rcvbuf: Option<usize>,
) -> Result<TcpStream> {
    if src.is_none() && rcvbuf.is_none() {
        let s = TcpStream::connect(dst).await?;
        s.set_nodelay(true)?;
        return Ok(s);
    }
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(src) = src {
        if src.is_ipv4() {
            set_bind_no_port(&sock);
        }
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .with_context(|| format!("bind {src}"))?;
    }
    match sock.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let std: std::net::TcpStream = sock.into();
    let stream = TcpStream::from_std(std)?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e.into());
    }
    // A refused connection may surface only as a failed peer lookup.
    stream.peer_addr().context("connect")?;
    Ok(stream)
}

fn set_bind_no_port(sock: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: valid fd, option value is a c_int that lives for the call.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Resolves `host:port` (taken from a URL authority) to a socket address.
pub fn resolve(authority: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    authority
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("cannot resolve {authority}"))
}

/// Raises the soft open-file limit to the hard limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            return r.rlim_cur;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let v = parse_src_ips("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(v.len(), 3);
        let v = parse_src_ips("127.0.0.2-5,127.0.1.1").unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(default_src_ips(100).len(), 0);
        assert_eq!(default_src_ips(30_000).len(), 3);
    }
}
