mod common;
use common::*;

#[tokio::test]
async fn publish_subscribe_v4() {
    let broker = start_broker().await;
    let (mut sub, _) = v4::connect(v4::options(broker.addr, "sub")).await;
    sub.subscribe("a/#", v4::QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    publisher
        .client
        .publish("a/b", v4::QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"hi");
    broker.stop().await;
}
