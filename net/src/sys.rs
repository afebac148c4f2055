//! The one place this crate asks the OS for a duplicate descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use glommio::net::TcpStream;

/// Splits a stream into a reading and a writing half: two descriptors for one socket, so one
/// task can wait to read while another writes. Shutting either down ends both.
///
/// Errors: `dup` failed (out of descriptors).
#[allow(unsafe_code)]
pub fn split(stream: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    // SAFETY: `dup` on a descriptor we own; on success the new descriptor is open and owned by
    // nobody else, and the glommio stream built from it takes ownership and closes it on drop.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is a fresh, open, owned descriptor of a connected TCP socket.
    let writer = unsafe { TcpStream::from_raw_fd(fd) };
    Ok((stream, writer))
}

/// A listening socket on `addr`, without `SO_REUSEPORT` (which glommio's own `bind` sets, and
/// which would let two members share a port silently).
///
/// Also returns a second descriptor of the socket, to shut it down from outside the accept loop.
///
/// Errors: the address is in use or not local.
#[allow(unsafe_code)]
pub fn listen(
    addr: std::net::SocketAddr,
) -> io::Result<(glommio::net::TcpListener, socket2::Socket)> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::IntoRawFd;
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let handle = socket.try_clone()?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a bound, listening socket, which the
    // glommio listener takes and closes on drop.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) };
    Ok((listener, handle))
}
