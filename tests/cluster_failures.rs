//! A cluster through failures: NATS stopped and restarted during a write
//! run (a private `nats-server`), and a node killed with SIGKILL while its
//! clients write.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Follower, State, lww, write_run};
use common::nats::PrivateNats;
use common::token;
use rmpv::Value;

#[tokio::test]
async fn nats_stopped_mid_run_loses_nothing_and_readers_catch_up_once_in_order() {
    let test = "nats_stopped_mid_run_loses_nothing_and_readers_catch_up_once_in_order";
    let Some(postgres) = common::postgres::url(test) else { return };
    let Some(nats) = PrivateNats::start(test) else { return };
    let cluster = Cluster::start(&postgres, &nats.url(), 2, &[]);
    cluster.wait_until_formed().await;
    let mut reader = Follower::start(cluster.addr(1), "race", None, State::new()).await;
    let writer = cluster.addr(0);
    let mut acked = write_run(writer, "w1", 10).await;
    nats.stop();
    common::eventually("readyz names the backplane as down and stays 200", || async {
        let (status, body) = common::idp::http(writer, "GET", "/readyz", None, None).await;
        assert_eq!(status, 200, "a NATS outage does not take the node out of the balancer");
        body.contains("backplane is down").then_some(())
    })
    .await;
    // Writes go on committing to Postgres while NATS is down.
    acked.extend(write_run(writer, "w2", 10).await);
    nats.start_again();
    acked.extend(write_run(writer, "w3", 10).await);
    assert!(acked.len() >= 150, "every write was acknowledged: {}", acked.len());
    // The reader on the other node catches up (no reset, each change once, in order).
    reader.until(&lww(&acked)).await;
    common::eventually("readyz is plain ready again", || async {
        let (_, body) = common::idp::http(writer, "GET", "/readyz", None, None).await;
        (body == "ready\n").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_killed_nodes_clients_move_to_another_node_and_their_outboxes_settle() {
    use syncgate_client::{Backoff, Client, ClientConfig};
    let test = "a_killed_nodes_clients_move_to_another_node_and_their_outboxes_settle";
    let Some((postgres, nats)) = Cluster::services(test) else { return };
    let mut cluster = Cluster::start(&postgres, &nats, 2, &[]);
    let urls: Vec<String> = (0..2).map(|i| format!("ws://{}/ws", cluster.addr(i))).collect();
    let config = ClientConfig {
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(300) },
        ..ClientConfig::new(urls[0].clone())
            .with_fallback_urls([urls[1].clone()])
            .with_token_provider(|_| async { Ok(Some(token("writer", &[]))) })
    };
    let (client, _events) = Client::connect(config).unwrap();
    for i in 0..40 {
        client.write("moved", &format!("k{i}"), Value::from(i)).await.unwrap();
        if i == 15 {
            cluster.nodes[0].kill();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    common::eventually("the outbox settles on the surviving node", || async { (client.pending() == 0).then_some(()) })
        .await;
    let count = format!("SELECT count(*) FROM {}.records WHERE collection = 'moved'", cluster.schema);
    let rows = common::postgres::sql(&postgres, &count).await;
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("40"), "every write is in Postgres");
    client.close().await;
}
