//! Who may start a handshake: connections that have not upgraded yet are
//! bounded on their own, in all and per source address.
//!
//! A connection slot (`--max-connections`) is only taken at upgrade, so a
//! flood of TCP sockets that never send a request cannot keep real
//! clients out: at most `--max-pending-handshakes-per-ip` of them per
//! address wait for their `--handshake-timeout-ms`, and the rest get an
//! immediate HTTP 503.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts of handshakes in progress. Shared as `Arc<Pending>`.
#[derive(Debug)]
pub struct Pending {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_ip: usize,
}

/// Why a handshake may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `--max-pending-handshakes` are in progress.
    #[error("too many handshakes in progress")]
    Total,
    /// `--max-pending-handshakes-per-ip` are in progress from this address.
    #[error("too many handshakes in progress from this address")]
    PerIp,
}

impl Refused {
    /// The HTTP response that says so (a retry is worth it: pending
    /// handshakes end within the handshake timeout).
    pub fn response(self) -> String {
        let body = format!("{self}; retry shortly\n");
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// A handshake in progress; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    /// Limits of `max_total` handshakes at once, `max_per_ip` per address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Pending { counts: Mutex::default(), max_total, max_per_ip }
    }

    /// Takes a place for a handshake from `ip`, if there is one.
    ///
    /// # Errors
    /// [`Refused`] naming the bound that is reached.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let ip = source_key(ip);
        let mut c = self.counts.lock();
        if c.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot { pending: self.clone(), ip })
    }

    /// Handshakes in progress.
    pub fn len(&self) -> usize {
        self.counts.lock().total
    }

    /// True when no handshake is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (one host
/// or site usually holds a whole /64, so per-address bounds on /128 would
/// be no bound at all).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.pending.counts.lock();
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_all_and_per_address() {
        let p = Arc::new(Pending::new(3, 2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = p.enter(a).unwrap();
        let _a2 = p.enter(a).unwrap();
        assert_eq!(p.enter(a).unwrap_err(), Refused::PerIp);
        let _b1 = p.enter(b).unwrap();
        assert_eq!(p.enter(b).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(p.len(), 2);
        let _a3 = p.enter(a).unwrap();
        assert!(Refused::PerIp.response().starts_with("HTTP/1.1 503"));
        assert!(Refused::PerIp.response().contains("Retry-After: 1\r\n"));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let p = Arc::new(Pending::new(10, 1));
        let _a = p.enter("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(p.enter("2001:db8::2:3".parse().unwrap()).unwrap_err(), Refused::PerIp);
        let _b = p.enter("2001:db8:0:1::1".parse().unwrap()).unwrap();
        let _c = p.enter("::ffff:127.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(p.enter("127.0.0.2".parse().unwrap()).unwrap_err(), Refused::PerIp);
    }

    #[test]
    fn addresses_are_forgotten_when_done() {
        let p = Arc::new(Pending::new(10, 1));
        for i in 0..5u8 {
            drop(p.enter(IpAddr::from([127, 0, 0, i])).unwrap());
        }
        assert!(p.is_empty());
        assert!(p.counts.lock().per_ip.is_empty());
    }
}
