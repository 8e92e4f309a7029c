//! What the node's socket tests share: stub servers and a node on loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use axum::Router;
use etho_node::{AppState, NodeConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A loopback URL with nothing listening (bound, then closed).
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A running node; stops when dropped.
pub struct Node {
    pub base: String,
    _stop: oneshot::Sender<()>,
    _state_dir: tempfile::TempDir,
}

/// Starts a node with `config` (its state in a fresh temp dir) on a free loopback port.
pub async fn start_node(config: NodeConfig) -> Node {
    let state_dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        state_dir: state_dir.path().to_path_buf(),
        ..config
    };
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(etho_node::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Node {
        base: format!("http://{addr}"),
        _stop: stop,
        _state_dir: state_dir,
    }
}
