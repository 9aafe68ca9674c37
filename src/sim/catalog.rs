//! The catalog a simulated cluster shares, and what one node sees of it: a layer published on
//! the master reaches a replica `lag` later (a GeoServer JMS cluster's replication), unless the
//! replica is deaf (cut off from the broker) when the change would have reached it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// One change to a layer: published (`true`) or removed, at an instant (`None`: long ago, seen
/// everywhere at once).
#[derive(Clone, Copy, Debug)]
struct Event {
    at: Option<Instant>,
    present: bool,
    /// The node the change was made on (it knows at once), if any.
    origin: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A catalog that knows every layer name, except the ones removed since.
    open: bool,
    /// Every layer's changes, oldest first.
    layers: BTreeMap<String, Vec<Event>>,
}

/// The catalog shared by a simulated cluster: layer names (`ws:name`) and when each was published
/// or removed. Cheap to clone; the clones share the same catalog.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    inner: Arc<Mutex<Inner>>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// A catalog whose `layers` were published long ago: every node knows them at once.
    pub fn with_layers(layers: &[&str]) -> Catalog {
        let catalog = Catalog::new();
        {
            let mut inner = catalog.lock();
            for layer in layers {
                let event = Event {
                    at: None,
                    present: true,
                    origin: None,
                };
                inner.layers.insert((*layer).to_string(), vec![event]);
            }
        }
        catalog
    }

    /// A catalog that knows every layer name (what [`SimNode::start`](super::SimNode::start)
    /// gives a node of its own).
    pub(crate) fn open() -> Catalog {
        let catalog = Catalog::new();
        catalog.lock().open = true;
        catalog
    }

    /// Publishes `name` now (again, if it was removed).
    pub fn publish(&self, name: &str) {
        self.change(name, true, None);
    }

    /// Removes `name` now.
    pub fn remove(&self, name: &str) {
        self.change(name, false, None);
    }

    /// The layers published and not removed since (what the master sees), sorted.
    pub fn published(&self) -> Vec<String> {
        let inner = self.lock();
        let present = |events: &Vec<Event>| events.last().is_some_and(|e| e.present);
        inner
            .layers
            .iter()
            .filter(|(_, events)| present(events))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A change made on the node that hears with `origin` (it knows it at once, whatever its lag).
    pub(crate) fn change(&self, name: &str, present: bool, origin: Option<&Hearing>) {
        let event = Event {
            at: Some(Instant::now()),
            present,
            origin: origin.map(|h| h.id),
        };
        let mut inner = self.lock();
        inner
            .layers
            .entry(name.to_string())
            .or_default()
            .push(event);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test tool: a panic elsewhere while holding the lock leaves the data usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one node hears of the catalog: its lag behind the master and when it was deaf.
#[derive(Debug, Default)]
pub(crate) struct Hearing {
    /// Tells this node's own changes from the others'.
    id: u64,
    pub(crate) lag: Duration,
    /// Deaf spells, oldest first: from, until (`None`: still deaf).
    deaf: Vec<(Instant, Option<Instant>)>,
}

impl Hearing {
    pub(crate) fn new(lag: Duration) -> Hearing {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Hearing {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            lag,
            deaf: Vec::new(),
        }
    }

    pub(crate) fn set_deaf(&mut self, deaf: bool) {
        let now = Instant::now();
        match self.deaf.last_mut() {
            Some((_, until @ None)) if !deaf => *until = Some(now),
            Some((_, None)) => {}
            _ if deaf => self.deaf.push((now, None)),
            _ => {}
        }
    }

    pub(crate) fn is_deaf(&self) -> bool {
        matches!(self.deaf.last(), Some((_, None)))
    }

    /// Whether an event reached this node by `now`: its lag has passed, and the node was not
    /// deaf at any moment between the change and its delivery (the broker's message is lost).
    fn heard(&self, event: &Event, now: Instant) -> bool {
        let Some(at) = event.at else {
            return true;
        };
        if event.origin == Some(self.id) {
            return true;
        }
        let delivered = at + self.lag;
        delivered <= now
            && !self
                .deaf
                .iter()
                .any(|&(from, until)| from < delivered && until.is_none_or(|until| until > at))
    }

    /// Whether the node knows `layer` now. A name without a workspace matches any workspace.
    pub(crate) fn knows(&self, catalog: &Catalog, layer: &str) -> bool {
        let now = Instant::now();
        let inner = catalog.lock();
        let view = |events: &Vec<Event>| {
            events
                .iter()
                .rev()
                .find(|e| self.heard(e, now))
                .map(|e| e.present)
        };
        if layer.contains(':') {
            let seen = inner.layers.get(layer).and_then(view);
            return seen.unwrap_or(inner.open);
        }
        // Without a workspace: an open catalog still has the name in some workspace.
        inner.open
            || inner
                .layers
                .iter()
                .filter(|(name, _)| name.rsplit(':').next() == Some(layer))
                .any(|(_, events)| view(events) == Some(true))
    }

    /// The layers this node knows now (of the ones the catalog names), sorted.
    pub(crate) fn known(&self, catalog: &Catalog) -> Vec<String> {
        let names: Vec<String> = catalog.lock().layers.keys().cloned().collect();
        names
            .into_iter()
            .filter(|name| self.knows(catalog, name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lag_deafness_and_removal() {
        let catalog = Catalog::with_layers(&["topp:states"]);
        let master = Hearing::new(Duration::ZERO);
        let mut replica = Hearing::new(Duration::from_secs(2));
        assert!(replica.knows(&catalog, "topp:states"));
        assert!(replica.knows(&catalog, "states"), "unqualified");
        catalog.publish("demo:roads");
        assert!(master.knows(&catalog, "demo:roads"));
        assert!(!replica.knows(&catalog, "demo:roads"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(replica.knows(&catalog, "demo:roads"));
        catalog.remove("demo:roads");
        assert!(!master.knows(&catalog, "demo:roads"));
        assert!(
            replica.knows(&catalog, "demo:roads"),
            "the removal lags too"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!replica.knows(&catalog, "demo:roads"));
        assert_eq!(catalog.published(), ["topp:states"]);

        replica.set_deaf(true);
        assert!(replica.is_deaf());
        catalog.publish("demo:rivers");
        tokio::time::advance(Duration::from_secs(1)).await;
        replica.set_deaf(false);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!replica.knows(&catalog, "demo:rivers"), "lost while deaf");
        catalog.publish("demo:lakes");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(replica.knows(&catalog, "demo:lakes"), "hears again");
        catalog.change("demo:own", true, Some(&replica));
        assert!(
            replica.knows(&catalog, "demo:own"),
            "its own change, at once"
        );
        assert!(master.knows(&catalog, "demo:own"));
        assert_eq!(
            replica.known(&catalog),
            ["demo:lakes", "demo:own", "topp:states"]
        );
    }

    #[test]
    fn an_open_catalog_knows_every_name_but_the_removed_ones() {
        let catalog = Catalog::open();
        let node = Hearing::new(Duration::ZERO);
        assert!(node.knows(&catalog, "any:thing"));
        assert!(node.knows(&catalog, "thing"));
        catalog.remove("any:thing");
        assert!(!node.knows(&catalog, "any:thing"));
        assert!(node.knows(&catalog, "thing"));
        assert!(node.knows(&catalog, "other:thing"));
        assert!(catalog.published().is_empty());
    }
}
