//! `$SYS/broker/…` counters (mosquitto habit).

mod common;
use common::*;

#[tokio::test]
async fn sys_topics_report_connected_clients_and_are_hidden_from_root_wildcards() {
    let broker = start_broker().await;
    let (mut watcher, _) = v4::connect(v4::options(broker.addr, "watcher")).await;
    // [MQTT-4.7.2-1] `#` does not match `$SYS/…`.
    watcher.subscribe("#", v4::QoS::AtMostOnce).await;
    watcher.subscribe("$SYS/broker/clients/connected", v4::QoS::AtMostOnce).await;
    let publish = watcher.next_publish().await;
    assert_eq!(publish.topic, "$SYS/broker/clients/connected");
    assert!(publish.retain, "retained: a new subscriber gets the last value at once");
    let connected: u64 = std::str::from_utf8(&publish.payload).unwrap().parse().unwrap();
    assert_eq!(connected, 1);
    broker.stop().await;
}
