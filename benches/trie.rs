//! Matching a publish against 100k subscriptions, 10% of them wildcards.
//!
//! Filters look like device telemetry (`site/{s}/dev/{d}/temp`); every tenth one
//! replaces a level with `+` or ends in `#`. Topics are drawn from the same space so
//! most of them hit an exact filter and a few wildcard ones, as in a real fleet.
//! The `site/{s}/dev/+/{metric}` filters are shared by many keys, so a publish
//! reports about 11 entries on average: the time includes that fan-out.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rookery::broker::trie::TopicTrie;
use rookery::protocol::TopicFilter;

const FILTERS: u32 = 100_000;
const SITES: u32 = 100;
const METRICS: [&str; 4] = ["temp", "humidity", "power", "status"];

fn filter_text(i: u32) -> String {
    let site = i % SITES;
    let dev = i / SITES;
    let metric = METRICS.get((i % 4) as usize).copied().unwrap_or("temp");
    match i % 10 {
        0 => match (i / 10) % 3 {
            0 => format!("site/{site}/dev/+/{metric}"),
            1 => format!("site/{site}/dev/{dev}/#"),
            _ => format!("site/+/dev/{dev}/{metric}"),
        },
        _ => format!("site/{site}/dev/{dev}/{metric}"),
    }
}

fn build() -> TopicTrie<u32, u32> {
    let mut trie = TopicTrie::new();
    for i in 0..FILTERS {
        let filter = TopicFilter::new(filter_text(i)).expect("bench filters are valid");
        trie.insert(&filter, i, i);
    }
    trie
}

fn topics() -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..1024)
        .map(|_| {
            let i = rng.u32(0..FILTERS);
            let metric = METRICS.get(rng.usize(0..4)).copied().unwrap_or("temp");
            format!("site/{}/dev/{}/{metric}", i % SITES, i / SITES)
        })
        .collect()
}

fn bench_match(c: &mut Criterion) {
    let trie = build();
    let topics = topics();
    let mut matched = 0usize;
    for t in &topics {
        trie.for_each_match(t, |_, _| matched += 1);
    }
    println!(
        "{} entries; {:.2} matches per topic",
        trie.len(),
        matched as f64 / topics.len() as f64
    );

    let mut group = c.benchmark_group("trie");
    group.throughput(Throughput::Elements(1));
    let mut next = topics.iter().cycle();
    group.bench_function("match_100k_filters_10pct_wildcards", |b| {
        b.iter(|| {
            let topic = next
                .next()
                .map(String::as_str)
                .unwrap_or("site/0/dev/0/temp");
            let mut n = 0u32;
            trie.for_each_match(black_box(topic), |_, v| n = n.wrapping_add(*v));
            black_box(n)
        })
    });
    group.bench_function("no_match", |b| {
        b.iter(|| {
            let mut n = 0u32;
            trie.for_each_match(black_box("other/tree/of/topics"), |_, v| n += v);
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_match);
criterion_main!(benches);
