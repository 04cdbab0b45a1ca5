//! One publisher to 1,000 in-process subscribers: the cost of `Broker::publish`
//! (trie match, admission, one mailbox send per subscriber) plus draining the
//! mailboxes, without sockets.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rookery::broker::message::{Delivery, Message};
use rookery::broker::router::{Filter, Subscription};
use rookery::broker::{Broker, Link, Mailbox, SessionRequest, Successor};
use rookery::config::{Limits, SessionConfig};
use rookery::protocol::{ClientId, Properties, QoS, SubscriptionOptions, TopicName};
use rookery::storage::Storage;

const SUBSCRIBERS: usize = 1_000;

fn fanout(c: &mut Criterion) {
    let limits = Limits {
        max_queued_messages: 0,
        ..Limits::default()
    };
    let broker = Broker::new(limits, SessionConfig::default(), Storage::in_memory());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut mailboxes: Vec<Arc<Mailbox>> = Vec::with_capacity(SUBSCRIBERS);
    let mut slots = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let client_id = ClientId::new(format!("sub-{i}"));
        let mailbox = Arc::new(Mailbox::default());
        let link = Link {
            connection_id: broker.next_connection_id(),
            mailbox: mailbox.clone(),
            is_persistent: false,
        };
        let request = SessionRequest {
            client_id: &client_id,
            clean_start: true,
            expiry: Some(std::time::Duration::ZERO),
            will: None,
            connection: Successor {
                peer: None,
                listener: "bench".into(),
            },
        };
        let attached = runtime.block_on(broker.connect(request, link)).unwrap();
        let subscription = Subscription {
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
            identifier: None,
        };
        let filter = Filter::parse(if i % 2 == 0 {
            "sensors/+/temp"
        } else {
            "sensors/#"
        })
        .unwrap();
        broker
            .subscribe(&client_id, attached.claim, &filter, subscription)
            .unwrap();
        mailboxes.push(mailbox);
        slots.push(attached.slot);
    }
    let publisher = ClientId::new("publisher");
    let message = Arc::new(Message {
        topic: TopicName::new("sensors/kitchen/temp").unwrap(),
        payload: Bytes::from(vec![0u8; 64]),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        expires_at: None,
    });
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function("publish_qos1_to_1000_mailboxes", |b| {
        b.iter_custom(|iterations| {
            let mut batch: Vec<Delivery> = Vec::new();
            let start = Instant::now();
            for _ in 0..iterations {
                let routed = broker.publish(&publisher, message.clone()).unwrap();
                assert_eq!(routed.matched, SUBSCRIBERS);
                for mailbox in &mailboxes {
                    mailbox.take(usize::MAX, &mut batch);
                    batch.clear();
                }
                for slot in &slots {
                    slot.release();
                }
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
