//! The one reader of `DATA/peers` for a running process: it lists the stored peers every
//! rescan interval and publishes the list through a `tokio::sync::watch` channel when it
//! changed (a peer applied, removed or redefined, or a newer bundle stored). Everything that
//! follows the peers (the bundle poller, the trunks, the imports, the gateway's verifier set)
//! subscribes here instead of reading the folder on its own.
//!
//! A listing that fails (a file that cannot be read) keeps the last list published, and the
//! log says so once per failure streak.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::peer_store::{PeerStore, StoredPeer};

/// The stored peers, by name, as last read.
pub type PeerList = Arc<Vec<StoredPeer>>;

/// Follows `DATA/peers` until dropped.
#[derive(Debug)]
pub struct PeerWatch {
    peers: watch::Receiver<PeerList>,
    task: JoinHandle<()>,
}

impl PeerWatch {
    /// Reads the peers now (so that subscribers start from the current list; a failure starts
    /// from none and says so) and again every `interval` (within a Tokio runtime).
    pub fn start(store: PeerStore, interval: Duration) -> PeerWatch {
        let first = match store.list() {
            Ok(peers) => peers,
            Err(error) => {
                tracing::warn!("reading the peers failed ({error}); following none until it reads");
                Vec::new()
            }
        };
        let (sender, peers) = watch::channel(Arc::new(first));
        let task = tokio::spawn(rescan(store, interval, sender));
        PeerWatch { peers, task }
    }

    /// The peers as they change.
    pub fn subscribe(&self) -> watch::Receiver<PeerList> {
        self.peers.clone()
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn rescan(store: PeerStore, interval: Duration, sender: watch::Sender<PeerList>) {
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        match store.list() {
            Ok(peers) => {
                failing = false;
                sender.send_if_modified(|current| {
                    if **current == peers {
                        return false;
                    }
                    *current = Arc::new(peers);
                    true
                });
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        "reading the peers failed ({error}); the peers already followed still are"
                    );
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{TestDir, ca, peer, td};

    #[tokio::test]
    async fn applied_redefined_and_removed_peers_are_published_and_nothing_else() {
        let dir = TestDir::new("peer-watch");
        let store = PeerStore::new(dir.path());
        let watch = PeerWatch::start(store.clone(), Duration::from_millis(10));
        let mut peers = watch.subscribe();
        assert!(peers.borrow_and_update().is_empty());

        let bundle = ca(&dir, "west-ca", "west.mesh").trust_bundle();
        let west = peer(
            "west",
            &bundle,
            "https://127.0.0.1:15446",
            "spiffe://west.mesh/ns/istio-system/sa/eastwest",
        );
        store.apply(&west, &td("east.mesh"), false).unwrap();
        peers.changed().await.unwrap();
        let names: Vec<String> = peers
            .borrow_and_update()
            .iter()
            .map(|p| p.peer.name.clone())
            .collect();
        assert_eq!(names, ["west"]);

        // Several rescans of an unchanged folder publish nothing.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!peers.has_changed().unwrap());

        let mut moved = west.clone();
        moved.eastwest_address = "192.0.2.9:15443".to_owned();
        store.apply(&moved, &td("east.mesh"), false).unwrap();
        peers.changed().await.unwrap();
        assert_eq!(
            peers.borrow_and_update()[0].peer.eastwest_address,
            "192.0.2.9:15443"
        );

        store.remove("west").unwrap();
        peers.changed().await.unwrap();
        assert!(peers.borrow_and_update().is_empty());
    }
}
