//! Read-your-writes: after a client's successful write, its reads go to the master for
//! `consistency.read_your_writes`, so that it sees its own change before the replicas have it. A
//! client is known by a cookie geolb sets on the write's answer (signed: geolb instances sharing
//! `consistency.key_file` honour each other's), or else by its address (a bounded table).
//!
//! The data path asks [`Pins::pinned`] for every read: without a live pin it costs an atomic load
//! and a look at the `Cookie` header.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderValue, COOKIE};
use ipnet::IpNet;
use ring::hmac;

/// The cookie's name.
pub const COOKIE_NAME: &str = "geolb_rw";

/// At most this many addresses are pinned at once (a flood of writers cannot grow it further;
/// their cookies still pin them).
const ADDRESSES_MAX: usize = 10_000;

/// How a pinned client was known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Cookie,
    Address,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Cookie => "cookie",
            By::Address => "address",
        }
    }
}

/// The clients that wrote a moment ago.
pub struct Pins {
    /// Signs cookies when no key is configured (random, per process).
    own_key: hmac::Key,
    /// Pinned addresses and until when (unix ms).
    addresses: Mutex<HashMap<IpAddr, u64>>,
    /// The latest expiry in `addresses` (unix ms): past it, the table needs no look.
    latest: AtomicU64,
}

impl Default for Pins {
    fn default() -> Self {
        Pins::new()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Pins {
    pub fn new() -> Pins {
        let rng = ring::rand::SystemRandom::new();
        // A key generation failure (no system randomness) leaves a key nobody can guess less
        // well than a fixed one: the time and the process id.
        let own_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let seed = format!("{}:{}", now_ms(), std::process::id());
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
        });
        Pins {
            own_key,
            addresses: Mutex::new(HashMap::new()),
            latest: AtomicU64::new(0),
        }
    }

    fn key(&self, shared: Option<&[u8]>) -> hmac::Key {
        match shared {
            Some(key) => hmac::Key::new(hmac::HMAC_SHA256, key),
            None => self.own_key.clone(),
        }
    }

    /// Pins a client that just wrote, for `for_`: its address (when `by_address`), and the
    /// `Set-Cookie` value for its answer. `path`: the cookie's path (the context path); `secure`:
    /// the client came over TLS (the cookie then goes cross-site too: map apps on other sites).
    pub fn pin(
        &self,
        client: IpAddr,
        for_: Duration,
        by_address: bool,
        (key, path, secure): (Option<&[u8]>, &str, bool),
    ) -> Option<HeaderValue> {
        let until = now_ms() + for_.as_millis() as u64;
        if by_address {
            let mut table = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            if table.len() >= ADDRESSES_MAX {
                let now = now_ms();
                table.retain(|_, &mut t| t > now);
            }
            if table.len() < ADDRESSES_MAX || table.contains_key(&client) {
                table.insert(client, until);
                self.latest.fetch_max(until, Ordering::Relaxed);
            }
        }
        let tag = hmac::sign(&self.key(key), until.to_string().as_bytes());
        let mac = hex(&tag.as_ref()[..16]);
        let path = if path.is_empty() { "/" } else { path };
        let site = if secure {
            "; Secure; SameSite=None"
        } else {
            "; SameSite=Lax"
        };
        let max_age = for_.as_secs().max(1);
        let cookie =
            format!("{COOKIE_NAME}={until}.{mac}; Path={path}; Max-Age={max_age}; HttpOnly{site}");
        HeaderValue::from_str(&cookie).ok()
    }

    /// Whether this read's client wrote a moment ago: a valid, unexpired cookie, or a pinned
    /// address (when `by_address`).
    pub fn pinned(
        &self,
        headers: &HeaderMap,
        client: impl FnOnce() -> IpAddr,
        by_address: bool,
        key: Option<&[u8]>,
    ) -> Option<By> {
        let now = now_ms();
        if self.cookie_pins(headers, key, now) {
            return Some(By::Cookie);
        }
        if !by_address || self.latest.load(Ordering::Relaxed) <= now {
            return None;
        }
        let table = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        table
            .get(&client())
            .is_some_and(|&until| until > now)
            .then_some(By::Address)
    }

    fn cookie_pins(&self, headers: &HeaderMap, key: Option<&[u8]>, now: u64) -> bool {
        let mut values = headers.get_all(COOKIE).iter();
        let Some(value) = values.find_map(|v| cookie_value(v.as_bytes())) else {
            return false;
        };
        let Some((until, mac)) = value.split_once('.') else {
            return false;
        };
        let Ok(until_ms) = until.parse::<u64>() else {
            return false;
        };
        if until_ms <= now {
            return false;
        }
        let Some(mac) = unhex(mac) else { return false };
        // The whole tag is not sent: compare the 16 bytes that are (ring's verify wants all).
        let tag = hmac::sign(&self.key(key), until.as_bytes());
        mac.len() == 16 && constant_time_eq(&tag.as_ref()[..16], &mac)
    }
}

/// The value of the `geolb_rw` cookie in a `Cookie` header.
fn cookie_value(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?;
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE_NAME).then_some(value.trim())
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client a request comes from: the peer, or, when the peer is a trusted proxy, the last
/// `X-Forwarded-For` address that is not a trusted proxy.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    hops.iter()
        .rev()
        .map_while(|hop| hop.trim().parse::<IpAddr>().ok())
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_of(set_cookie: &HeaderValue) -> HeaderMap {
        let value = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        let both = format!("other=1; {value}");
        headers.insert(COOKIE, HeaderValue::from_str(&both).unwrap());
        headers
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_cookie_pins_until_it_expires_and_only_with_its_key() {
        let pins = Pins::new();
        let set = pins
            .pin(
                A,
                Duration::from_secs(5),
                false,
                (None, "/geoserver", false),
            )
            .unwrap();
        let text = set.to_str().unwrap();
        assert!(
            text.contains("; Path=/geoserver; Max-Age=5; HttpOnly; SameSite=Lax"),
            "{text}"
        );
        let headers = cookie_of(&set);
        assert_eq!(pins.pinned(&headers, || B, false, None), Some(By::Cookie));
        // Another process's random key: not ours.
        assert_eq!(Pins::new().pinned(&headers, || B, false, None), None);
        // A tampered expiry breaks the signature.
        let forged = text.replacen(|c: char| c.is_ascii_digit(), "9", 1);
        let forged = HeaderValue::from_str(&forged).unwrap();
        assert_eq!(pins.pinned(&cookie_of(&forged), || B, false, None), None);
        // No address pin was asked for.
        assert_eq!(pins.pinned(&HeaderMap::new(), || A, true, None), None);
        // Over TLS: for map apps on other sites.
        let set = pins
            .pin(A, Duration::from_secs(5), false, (None, "", true))
            .unwrap();
        assert!(set
            .to_str()
            .unwrap()
            .contains("; Path=/; Max-Age=5; HttpOnly; Secure; SameSite=None"));
    }

    #[test]
    fn instances_sharing_a_key_honour_each_others_cookies() {
        let key: &[u8] = b"0123456789abcdef0123";
        let (one, two) = (Pins::new(), Pins::new());
        let set = one
            .pin(A, Duration::from_secs(5), false, (Some(key), "/", false))
            .unwrap();
        let headers = cookie_of(&set);
        assert_eq!(
            two.pinned(&headers, || B, false, Some(key)),
            Some(By::Cookie)
        );
        assert_eq!(two.pinned(&headers, || B, false, None), None);
    }

    #[test]
    fn an_address_pins_until_it_expires() {
        let pins = Pins::new();
        pins.pin(A, Duration::from_millis(300), true, (None, "/", false));
        let none = HeaderMap::new();
        assert_eq!(pins.pinned(&none, || A, true, None), Some(By::Address));
        assert_eq!(pins.pinned(&none, || B, true, None), None);
        assert_eq!(
            pins.pinned(&none, || A, false, None),
            None,
            "by_address off"
        );
        let expired = std::time::Instant::now() + Duration::from_secs(5);
        while pins.pinned(&none, || A, true, None).is_some() {
            assert!(std::time::Instant::now() < expired, "the pin never expired");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 192.0.2.1, 10.0.0.3"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_address(&headers, proxy, &trusted), A);
        // An untrusted peer's header is not believed.
        assert_eq!(client_address(&headers, B, &trusted), B);
        assert_eq!(client_address(&HeaderMap::new(), proxy, &trusted), proxy);
    }
}
