//! `$SYS/broker/…` counters (mosquitto habit).

mod common;
use common::*;

#[tokio::test]
async fn sys_topics_report_connected_clients_and_are_hidden_from_root_wildcards() {
    let mut config = rookery::Config::default();
    config.metrics.sys_interval = Some(std::time::Duration::from_millis(250));
    let broker = start_broker_with(config).await;
    let (mut watcher, _) = v4::connect(v4::options(broker.addr, "watcher")).await;
    // [MQTT-4.7.2-1] `#` does not match `$SYS/…`.
    watcher.subscribe("#", v4::QoS::AtMostOnce).await;
    watcher
        .subscribe("$SYS/broker/clients/connected", v4::QoS::AtMostOnce)
        .await;
    // A refresh after the watcher connected counts it.
    loop {
        let publish = watcher.next_publish().await;
        assert_eq!(publish.topic, "$SYS/broker/clients/connected");
        if &publish.payload[..] == b"1" {
            break;
        }
    }
    // Retained: a new subscriber gets the last value at once, with the retain flag.
    let (mut late, _) = v4::connect(v4::options(broker.addr, "late")).await;
    late.subscribe("$SYS/broker/clients/connected", v4::QoS::AtMostOnce)
        .await;
    let publish = late.next_publish().await;
    assert!(publish.retain);
    assert!(["1", "2"].contains(&std::str::from_utf8(&publish.payload).unwrap()));
    broker.stop().await;
}
