//! A feed socket (one per line, A and B): bound to the group's port,
//! joined on one interface.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// Binds `group:port`, joins `group` on `interface` and asks for a
/// `recv_buffer` byte receive buffer. Returns the socket and the receive
/// buffer the kernel actually granted.
///
/// Binding the group address (not 0.0.0.0) and turning `IP_MULTICAST_ALL`
/// off make the socket see only this group, even when another feed or test
/// on the host uses the same port.
///
/// # Errors
/// Any failing socket call, with the step that failed in the message.
pub fn bind(
    group: Ipv4Addr,
    port: u16,
    interface: Ipv4Addr,
    recv_buffer: usize,
) -> io::Result<(UdpSocket, usize)> {
    let step = |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let s =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(step("creating UDP socket"))?;
    s.set_reuse_address(true).map_err(step("setting SO_REUSEADDR"))?;
    s.set_multicast_all_v4(false).map_err(step("turning IP_MULTICAST_ALL off"))?;
    // The kernel caps SO_RCVBUF at net.core.rmem_max (and doubles the value
    // for bookkeeping); a privileged process may force a larger one, which
    // is what absorbs a burst while the ingest thread is descheduled.
    let _ = s.set_recv_buffer_size(recv_buffer);
    if s.recv_buffer_size().unwrap_or(0) < recv_buffer {
        let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &recv_buffer);
    }
    let granted = s.recv_buffer_size().unwrap_or(0);
    s.bind(&SocketAddrV4::new(group, port).into()).map_err(step("binding the feed port"))?;
    s.join_multicast_v4(&group, &interface).map_err(step("joining the multicast group"))?;
    Ok((s.into(), granted))
}
