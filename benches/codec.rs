//! PUBLISH decode and encode throughput, 16 B to 64 KiB, for 3.1.1 and 5.0
//! (compare with rumqttd's `benchmarks/parsers/{v4,v5}.rs`).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rookery::protocol::{
    decode, encode, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
};

const SIZES: [usize; 3] = [16, 1024, 64 * 1024];
const VERSIONS: [(ProtocolVersion, &str); 2] =
    [(ProtocolVersion::V3_1_1, "v4"), (ProtocolVersion::V5, "v5")];

fn publish(size: usize, version: ProtocolVersion) -> Packet {
    let properties = if version.is_v5() {
        Properties {
            message_expiry_interval: Some(60),
            user_properties: vec![("trace".into(), "abc123".into())],
            ..Properties::default()
        }
    } else {
        Properties::default()
    };
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "sensors/building-1/floor-2/temperature".into(),
        packet_id: PacketId::new(42),
        properties,
        payload: Bytes::from(vec![0xA5; size]),
        ..Publish::default()
    })
}

fn decode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    for (version, name) in VERSIONS {
        for size in SIZES {
            // A read buffer holding a run of packets, as after a large socket read.
            let mut one = BytesMut::new();
            encode(&publish(size, version), version, &mut one);
            let count = (1 << 20) / one.len();
            let wire = one.repeat(count.clamp(16, 1000));
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &wire, |b, wire| {
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| {
                        while let Some(packet) =
                            decode(&mut buf, version, usize::MAX).expect("valid")
                        {
                            black_box(packet);
                        }
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn encode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_publish");
    for (version, name) in VERSIONS {
        for size in SIZES {
            let packet = publish(size, version);
            let mut buf = BytesMut::with_capacity(size + 256);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &packet, |b, packet| {
                b.iter(|| {
                    buf.clear();
                    encode(black_box(packet), version, &mut buf);
                    black_box(buf.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode_publish, encode_publish);
criterion_main!(benches);
