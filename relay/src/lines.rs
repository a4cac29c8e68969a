//! Feed lines -> NATS: one task per joined group reads datagrams and
//! publishes each, unchanged, on its line's subject.
//!
//! While the client is disconnected a datagram is dropped and counted at
//! once instead of queued: a stale packet is worth nothing to a gateway,
//! which repairs the hole from the retransmission server or the snapshot
//! channel (through this relay) once the connection is back. So the only
//! queues are the socket's receive buffer and async-nats' bounded command
//! channel.

use crate::metrics::LineMetrics;
use async_nats::connection::State;
use async_nats::Client;
use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Receive buffer: a datagram can be at most this long.
const DATAGRAM: usize = 65_536;

/// Relays one joined group to `subject` until `stop`.
pub async fn relay(
    sock: UdpSocket,
    client: Client,
    subject: String,
    m: LineMetrics,
    stop: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(DATAGRAM);
    loop {
        buf.reserve(DATAGRAM);
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_buf(&mut buf) => match r {
                Ok(n) => n,
                // Nothing a receiver can fix (e.g. ENOMEM); the next datagram may do.
                Err(_) => continue,
            },
        };
        // The datagram as one shared buffer: no copy into the publish.
        let datagram = buf.split().freeze();
        if client.connection_state() != State::Connected {
            m.dropped.increment(1);
            continue;
        }
        match client.publish(subject.clone(), datagram).await {
            Ok(()) => {
                m.packets.increment(1);
                m.bytes.increment(n as u64);
            }
            Err(_) => m.publish_errors.increment(1),
        }
    }
}
