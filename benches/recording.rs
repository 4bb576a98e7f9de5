//! The recording hot path: a VU pushes samples into its own recorder, the aggregator drains
//! the recorder's buffer, which merges them into per-interval and run-total HDR histograms and closes
//! intervals. Reported per sample (`Throughput::Elements`), so the figure is CPU time per
//! recorded query independent of the machine's wall-clock speed.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::sync::CancellationToken;

use thumper::metrics::aggregator::{Aggregator, AggregatorConfig};
use thumper::metrics::recorder::{Recorder, SampleKind};

const SAMPLES: u64 = 10_000;

fn aggregator(open_model: bool) -> Aggregator {
    Aggregator::new(AggregatorConfig {
        start: Instant::now(),
        interval: Duration::from_secs(1),
        planned: Duration::from_secs(60),
        query_names: vec!["health".into(), "tenant".into(), "lookup".into()],
        open_model,
        vus: Arc::new(AtomicU64::new(0)),
        watchers: Vec::new(),
        abort: CancellationToken::new(),
    })
}

fn record_and_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(SAMPLES));
    for (label, open_model) in [("closed-model", false), ("open-model", true)] {
        group.bench_function(format!("record+merge/{label}"), |b| {
            b.iter_batched(
                || aggregator(open_model),
                |mut agg| {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let start = Instant::now();
                    let mut rec = Recorder::new(start, tx);
                    let buffer = rx.try_recv().expect("the recorder registers its buffer");
                    let mut scratch = Vec::new();
                    for i in 0..SAMPLES {
                        // Spread the samples over 10 intervals with realistic latencies.
                        let at = start + Duration::from_micros(i * 1_000);
                        rec.push(
                            at,
                            SampleKind::Query {
                                query: (i % 3) as u16,
                                response_us: 200 + (i * 7919) % 5_000,
                                service_us: 150 + (i * 104_729) % 4_000,
                                lag_us: open_model.then_some(i % 300),
                                tenant_violations: 0,
                            },
                        );
                        if i % 256 == 255 {
                            buffer.drain_into(&mut scratch);
                            agg.ingest(scratch.drain(..));
                        }
                    }
                    drop(rec);
                    buffer.drain_into(&mut scratch);
                    agg.ingest(scratch.drain(..));
                    agg.finalize_until(20_000_000);
                    agg
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, record_and_merge);
criterion_main!(benches);
