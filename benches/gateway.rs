//! Per-core throughput of the two CPU-bound steps of the gateway path, in events per second:
//! the gateway's route + envelope serialization, and the fake's payload generation.
//!
//! `cargo bench --bench gateway`; criterion reports elements/s (one element = one event).

use std::fmt;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use thumper::gateway::envelope::{route, Envelope};
use thumper::gateway_load::fake_discord::payload::{self, EventMark, MemberEventKind};
use thumper::gateway_load::fake_discord::World;

/// One payload shape to measure.
#[derive(Clone, Copy)]
enum Shape {
    Member(MemberEventKind),
    /// GUILD_CREATE of a guild with this many members.
    GuildCreate(u32),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Member(kind) => f.write_str(kind.event_name()),
            Shape::GuildCreate(members) => write!(f, "GUILD_CREATE/{members}_members"),
        }
    }
}

const SHAPES: [Shape; 4] = [
    Shape::Member(MemberEventKind::Add),
    Shape::Member(MemberEventKind::Update),
    Shape::Member(MemberEventKind::Remove),
    Shape::GuildCreate(100),
];

fn world(members: u32) -> World {
    World {
        guilds: 1000,
        members_per_guild: members,
        total_shards: 4,
    }
}

fn generate(shape: Shape, n: u64) -> String {
    let mark = EventMark {
        id: n,
        sent_us: 1_700_000_000_000_000 + n,
    };
    match shape {
        Shape::Member(kind) => {
            payload::member_event(n + 2, kind, &world(100), n % 250, n % 100, mark)
        }
        Shape::GuildCreate(members) => payload::guild_create(n + 2, &world(members), n % 250),
    }
}

fn fake_payload_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("fake_payload_generation");
    group.throughput(Throughput::Elements(1));
    for shape in SHAPES {
        group.bench_with_input(BenchmarkId::from_parameter(shape), &shape, |b, &shape| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                black_box(generate(shape, n))
            });
        });
    }
    group.finish();
}

fn gateway_envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("gateway_route_and_envelope");
    group.throughput(Throughput::Elements(1));
    for shape in SHAPES {
        let json = generate(shape, 7);
        group.bench_with_input(BenchmarkId::from_parameter(shape), &json, |b, json| {
            let mut buf = Vec::with_capacity(json.len() + 128);
            b.iter(|| {
                buf.clear();
                let dispatch = route(black_box(json)).unwrap().unwrap();
                Envelope::new(0, &dispatch, 1_700_000_000_000_000).write_to(&mut buf);
                black_box(buf.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fake_payload_generation, gateway_envelope);
criterion_main!(benches);
