//! 1,000 concurrent WebSocket clients on loopback all receive every batch.

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::{Barrier, Semaphore, mpsc};

const CLIENTS: usize = 1000;
const BATCHES: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_each_receive_every_batch() {
    // Each client costs two descriptors here (client and server side, same process).
    let limit = rlimit::increase_nofile_limit(4 * CLIENTS as u64 + 256).expect("raise fd limit");
    assert!(
        limit >= 2 * CLIENTS as u64 + 64,
        "fd limit {limit} too low for the test"
    );

    let server = TestServer::start().await;
    let connected = Arc::new(Barrier::new(CLIENTS + 1));
    // Spread the handshakes so that the listen backlog never overflows.
    let dialing = Arc::new(Semaphore::new(64));
    let (received_tx, mut received_rx) = mpsc::unbounded_channel::<(usize, u64)>();
    let mut clients = Vec::with_capacity(CLIENTS);
    for id in 0..CLIENTS {
        let (addr, connected, dialing, received) = (
            server.addr,
            connected.clone(),
            dialing.clone(),
            received_tx.clone(),
        );
        clients.push(tokio::spawn(async move {
            let permit = dialing.acquire_owned().await.expect("semaphore");
            let mut ws = ws_connect(addr).await;
            ws_subscribe(&mut ws, &["top_pages"], None).await;
            drop(permit);
            connected.wait().await;
            let mut got = Vec::new();
            while got.len() < BATCHES as usize {
                let (batch, snapshot, resync, skipped) = flags(&ws_next(&mut ws).await);
                assert!(!snapshot && !resync);
                assert_eq!(skipped, 0, "client {id} was conflated at batch {batch}");
                got.push(batch);
                received.send((id, batch)).expect("test alive");
            }
            got
        }));
    }
    drop(received_tx);
    connected.wait().await;
    assert_eq!(server.metrics.clients().0, CLIENTS as i64);
    assert_eq!(server.hub.streams()[1].subscribers, CLIENTS);

    // Publish one batch at a time and wait until every client has it: each client must get
    // every batch, which conflation would (correctly) not promise to a lagging client.
    for b in 1..=BATCHES {
        server.publish("top_pages", b);
        for _ in 0..CLIENTS {
            let (_, batch) = tokio::time::timeout(HANG_GUARD, received_rx.recv())
                .await
                .expect("every client receives before the hang guard")
                .expect("clients alive");
            assert_eq!(batch, b);
        }
    }
    for client in clients {
        let got = client.await.expect("client task");
        assert_eq!(got, (1..=BATCHES).collect::<Vec<_>>());
    }
    assert_eq!(server.metrics.conflated(), 0);
    server.stop().await;
}
