//! Who may start a handshake: connections that have not upgraded yet are
//! bounded on their own, in all and per source address; and, per source
//! address, connections in all and new connections per second
//! ([`Sources`]).
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
        super::handshake::plain_answer("503 Service Unavailable", &[("Retry-After", "1")], &body, false)
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

/// Per source address: connections held (handshaking or open) and new
/// connections in the current second.
#[derive(Debug)]
pub struct Sources {
    by_ip: Mutex<HashMap<IpAddr, Source>>,
    max_connections: usize,
    max_per_sec: u32,
}

#[derive(Debug)]
struct Source {
    open: usize,
    second: std::time::Instant,
    new: u32,
}

/// Why a source may not connect now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    /// `--max-connections-per-ip` held.
    #[error("too many connections from this address")]
    Connections,
    /// `--max-handshakes-per-sec-per-ip` used up this second.
    #[error("too many new connections per second from this address")]
    Rate,
}

impl TooMany {
    /// The HTTP 429 that says so.
    pub fn response(self) -> String {
        let body = format!("{self}; retry after 1 s\n");
        super::handshake::plain_answer("429 Too Many Requests", &[("Retry-After", "1")], &body, false)
    }
}

/// A connection of a source; dropping it frees its place.
#[derive(Debug)]
pub struct Held {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    /// At most `max_connections` per address (0: any) and `max_per_sec` new
    /// ones per second (0: any).
    pub fn new(max_connections: usize, max_per_sec: u32) -> Self {
        Sources { by_ip: Mutex::default(), max_connections, max_per_sec }
    }

    /// Whether any limit is set (else nothing is tracked).
    pub fn limited(&self) -> bool {
        self.max_connections > 0 || self.max_per_sec > 0
    }

    /// Takes a place for a new connection from `ip` at `now`.
    ///
    /// # Errors
    /// [`TooMany`] naming the limit reached.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, now: std::time::Instant) -> Result<Held, TooMany> {
        let ip = source_key(ip);
        let mut m = self.by_ip.lock();
        let s = m.entry(ip).or_insert(Source { open: 0, second: now, new: 0 });
        if now.duration_since(s.second) >= std::time::Duration::from_secs(1) {
            (s.second, s.new) = (now, 0);
        }
        let refused = if self.max_connections > 0 && s.open >= self.max_connections {
            Some(TooMany::Connections)
        } else if self.max_per_sec > 0 && s.new >= self.max_per_sec {
            Some(TooMany::Rate)
        } else {
            None
        };
        if let Some(r) = refused {
            if s.open == 0 {
                // Remembered for its rate window only while it matters.
                if s.new == 0 {
                    m.remove(&ip);
                }
            }
            return Err(r);
        }
        s.open += 1;
        s.new += 1;
        Ok(Held { sources: self.clone(), ip })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.sources.by_ip.lock();
        if let Some(s) = m.get_mut(&self.ip) {
            s.open -= 1;
            // An address with nothing open is forgotten once its second is
            // over (bounded memory: entries exist only for open
            // connections and this second's arrivals).
            if s.open == 0 && s.second.elapsed() >= std::time::Duration::from_secs(1) {
                m.remove(&self.ip);
            }
        }
    }
}

/// What per-address admission holds for a connection: its handshake place
/// and, with per-address limits, its source place.
pub type Admitted = (Slot, Option<Held>);

/// Admits a connection from `ip`: a handshake place, then (with limits) a
/// source place.
///
/// # Errors
/// The HTTP answer (503 or 429) that refuses it.
pub fn admit(pending: &Arc<Pending>, sources: &Arc<Sources>, ip: IpAddr) -> Result<Admitted, String> {
    let slot = pending.enter(ip).map_err(Refused::response)?;
    let held = if sources.limited() {
        Some(sources.enter(ip, std::time::Instant::now()).map_err(TooMany::response)?)
    } else {
        None
    };
    Ok((slot, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_bounded_in_connections_and_per_second() {
        let t = std::time::Instant::now();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let s = Arc::new(Sources::new(2, 3));
        let one = s.enter(a, t).unwrap();
        let _two = s.enter(a, t).unwrap();
        assert_eq!(s.enter(a, t).unwrap_err(), TooMany::Connections);
        drop(one);
        let _three = s.enter(a, t).unwrap();
        assert_eq!(s.by_ip.lock()[&a].open, 2);
        drop(_three);
        assert_eq!(s.enter(a, t).unwrap_err(), TooMany::Rate, "3 new in this second");
        let _next = s.enter(a, t + std::time::Duration::from_secs(1)).unwrap();
        assert!(s.enter("127.0.0.3".parse().unwrap(), t).is_ok(), "per address");
    }

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
