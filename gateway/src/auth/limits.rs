//! Limits per principal and per source address that authentication
//! brings: connections per key, and failed attempts per address (so brute
//! force gets a few guesses a minute, not thousands a second).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Failed authentications per source address, in one-minute windows.
#[derive(Debug)]
pub struct Failures {
    max_per_min: u32,
    by_ip: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses remembered at most; beyond it, expired windows are dropped
/// and, if still full, new addresses are not counted (bounded memory under
/// a spoofed flood; handshakes per address stay bounded by admission).
const MAX_TRACKED: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

impl Failures {
    /// At most `max_per_min` failures per address per minute.
    pub fn new(max_per_min: u32) -> Self {
        Failures { max_per_min, by_ip: Mutex::new(HashMap::new()) }
    }

    /// Counts a failure from `ip`.
    pub fn record(&self, ip: IpAddr, now: Instant) {
        let mut m = self.by_ip.lock();
        if m.len() >= MAX_TRACKED && !m.contains_key(&ip) {
            m.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if m.len() >= MAX_TRACKED {
                return;
            }
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// If `ip` used up its failures, how long until it may try again.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let m = self.by_ip.lock();
        let &(start, n) = m.get(&ip)?;
        let left = WINDOW.checked_sub(now.duration_since(start))?;
        (n >= self.max_per_min && !left.is_zero()).then_some(left)
    }
}

/// Open connections per subject, over every transport.
#[derive(Debug, Default)]
pub struct Connections {
    by_subject: Mutex<HashMap<String, u32>>,
}

/// One counted connection of a subject; dropping it frees the place.
#[derive(Debug)]
pub struct Held {
    of: Arc<Connections>,
    subject: String,
}

impl Connections {
    /// Takes a place for `subject` if it holds fewer than `max`.
    pub fn take(self: &Arc<Self>, subject: &str, max: Option<u32>) -> Option<Held> {
        let mut m = self.by_subject.lock();
        let n = m.entry(subject.to_string()).or_insert(0);
        if max.is_some_and(|max| *n >= max) {
            if *n == 0 {
                m.remove(subject);
            }
            return None;
        }
        *n += 1;
        Some(Held { of: self.clone(), subject: subject.to_string() })
    }

    /// Connections `subject` holds.
    pub fn count(&self, subject: &str) -> u32 {
        self.by_subject.lock().get(subject).copied().unwrap_or(0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut m = self.of.by_subject.lock();
        if let Some(n) = m.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.subject);
            }
        }
    }
}

/// Token bucket for requests per second (burst: twice the rate), per
/// connection and per key.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    per_sec: f64,
    burst: f64,
    last: Instant,
}

impl RateLimit {
    /// `per_sec` requests per second.
    pub fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec);
        RateLimit { tokens: per_sec * 2.0, per_sec, burst: per_sec * 2.0, last: Instant::now() }
    }

    /// Takes a token, or says how long until one is available.
    /// Whether it has refilled completely (idle long enough to forget).
    pub fn is_full(&self) -> bool {
        self.tokens + self.last.elapsed().as_secs_f64() * self.per_sec >= self.burst
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

/// Requests per second per subject (`max_requests_per_sec` of its key or
/// token), over all its connections.
#[derive(Debug, Default)]
pub struct KeyRates {
    by_subject: Mutex<HashMap<String, RateLimit>>,
}

impl KeyRates {
    /// Takes a request of `subject`, limited to `per_sec`.
    ///
    /// # Errors
    /// How long until the subject may send again.
    pub fn take(&self, subject: &str, per_sec: u32) -> Result<(), Duration> {
        let mut m = self.by_subject.lock();
        if m.len() >= MAX_TRACKED && !m.contains_key(subject) {
            // Full buckets hold no information: forget them.
            m.retain(|_, b| !b.is_full());
        }
        m.entry(subject.to_string()).or_insert_with(|| RateLimit::new(per_sec)).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_an_address_for_the_rest_of_its_minute() {
        let f = Failures::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let t = Instant::now();
        f.record(a, t);
        assert_eq!(f.blocked(a, t), None);
        f.record(a, t);
        assert!(f.blocked(a, t + Duration::from_secs(1)).is_some_and(|d| d <= Duration::from_secs(59)));
        assert_eq!(f.blocked(b, t), None, "per address");
        assert_eq!(f.blocked(a, t + WINDOW), None, "a new minute");
    }

    #[test]
    fn a_keys_rate_is_shared_by_its_connections() {
        let r = KeyRates::default();
        for _ in 0..4 {
            assert!(r.take("desk", 2).is_ok(), "burst of twice the rate");
        }
        assert!(r.take("desk", 2).is_err());
        assert!(r.take("other", 2).is_ok());
    }

    #[test]
    fn connections_are_bounded_per_subject_and_freed_on_drop() {
        let c = Arc::new(Connections::default());
        let one = c.take("desk", Some(2)).unwrap();
        let _two = c.take("desk", Some(2)).unwrap();
        assert!(c.take("desk", Some(2)).is_none());
        assert!(c.take("other", Some(1)).is_some());
        drop(one);
        assert_eq!(c.count("desk"), 1);
        assert!(c.take("desk", None).is_some(), "no limit");
    }
}
