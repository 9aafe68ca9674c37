//! DNS discovery: a `[[nodes]]` entry with `discover = "dns"` stands for every address its host
//! resolves to. One task per entry resolves it every `resolve_interval` and reports the address
//! set to the cluster task; a failed or empty lookup keeps the last known set (DNS hiccups never
//! empty a pool). The resolver is a trait, so tests decide what a name resolves to.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::DiscoverSpec;

/// What a lookup returns.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns a host and port into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The system's resolver (`getaddrinfo` through tokio): Docker's embedded DNS, /etc/hosts…
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// The addresses an entry resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The `[[nodes]]` entry's name.
    pub entry: String,
    pub addrs: BTreeSet<SocketAddr>,
}

/// Resolves `spec` every interval, forever, reporting each non-empty answer.
pub async fn resolve_forever(
    spec: DiscoverSpec,
    resolver: Arc<dyn Resolve>,
    report: mpsc::Sender<Discovered>,
) {
    let mut ticker = tokio::time::interval(spec.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let lookup =
            tokio::time::timeout(spec.interval, resolver.resolve(&spec.host, spec.port)).await;
        let outcome = match lookup {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
            Ok(Ok(_)) => Err("no address".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        match outcome {
            Ok(addrs) => {
                if failing {
                    tracing::info!(
                        entry = spec.name,
                        host = spec.host,
                        "DNS lookup works again"
                    );
                    failing = false;
                }
                let addrs = addrs
                    .into_iter()
                    .map(|a| SocketAddr::new(a.ip(), spec.port))
                    .collect();
                if report
                    .send(Discovered {
                        entry: spec.name.clone(),
                        addrs,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(why) => {
                if !failing {
                    tracing::warn!(entry = spec.name, host = spec.host, error = %why, "DNS lookup failed: keeping the last known nodes");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_system_resolver_resolves_localhost() {
        let addrs = SystemResolver.resolve("localhost", 8080).await.unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 8080),
            "{addrs:?}"
        );
    }
}
