//! Feeders at run time: the rows of a `[[feeders]]` entry, projected onto the columns a
//! scenario uses, handed out one per iteration by the feeder's strategy (Gatling's).

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::params::{FeedRow, FeedValue};
use crate::scenario::{FeedStrategy, FeederDef, Segment};

/// One scenario's feeder: its rows (this instance's share, for the strategies that use each row
/// once) and where the next one is.
#[derive(Debug)]
pub struct Feed {
    /// The feeder's name, for notes.
    pub name: String,
    strategy: FeedStrategy,
    rows: Vec<FeedRow>,
    next: AtomicUsize,
}

impl Feed {
    /// The feed of `def` from its `header` and `rows`, keeping the `wanted` columns in order.
    /// `queue` and `shuffle` keep row k only where `segment` owns k, so the instances of a fleet
    /// use every row once between them; `shuffle` then orders its share by `seed`.
    pub fn new(
        def: &FeederDef,
        header: &[String],
        rows: &[Vec<String>],
        wanted: &[String],
        segment: Segment,
        seed: u64,
    ) -> Result<Feed, String> {
        let picks: Vec<usize> = wanted
            .iter()
            .map(|w| {
                header.iter().position(|h| h == w).ok_or_else(|| {
                    format!(
                        "feeder \"{}\" has no column \"{w}\" (its columns: {})",
                        def.name,
                        header.join(", ")
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let project = |row: &Vec<String>| -> FeedRow {
            picks
                .iter()
                .map(|i| FeedValue(row.get(*i).cloned().unwrap_or_default()))
                .collect()
        };
        let mut rows: Vec<FeedRow> = if def.strategy.once() {
            rows.iter()
                .enumerate()
                .filter(|(k, _)| segment.owns(*k as u64))
                .map(|(_, r)| project(r))
                .collect()
        } else {
            rows.iter().map(project).collect()
        };
        if def.strategy == FeedStrategy::Shuffle {
            rows.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(segment.seed(seed)));
        }
        Ok(Feed {
            name: def.name.clone(),
            strategy: def.strategy,
            rows,
            next: AtomicUsize::new(0),
        })
    }

    /// The next row; `None` when a `queue` or `shuffle` feeder has none left (or the feeder
    /// is empty): the scenario then ends.
    pub fn next(&self, rng: &mut impl Rng) -> Option<FeedRow> {
        if self.rows.is_empty() {
            return None;
        }
        match self.strategy {
            FeedStrategy::Queue | FeedStrategy::Shuffle => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                self.rows.get(i).cloned()
            }
            FeedStrategy::Circular => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                Some(self.rows[i % self.rows.len()].clone())
            }
            FeedStrategy::Random => Some(self.rows[rng.random_range(0..self.rows.len())].clone()),
        }
    }

    /// Rows this instance holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether the scenario ends when the rows run out.
    pub fn ends(&self) -> bool {
        self.strategy.once()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FeedSource;

    fn def(strategy: FeedStrategy) -> FeederDef {
        FeederDef {
            name: "f".into(),
            strategy,
            source: FeedSource::Sql(String::new()),
        }
    }

    #[test]
    fn a_queue_split_across_a_fleet_uses_every_row_once() {
        let header = vec!["a".to_owned(), "b".to_owned()];
        let rows: Vec<Vec<String>> = (0..10).map(|i| vec![i.to_string(), "x".into()]).collect();
        let mut seen = Vec::new();
        for strategy in [FeedStrategy::Queue, FeedStrategy::Shuffle] {
            seen.clear();
            for index in 0..3 {
                let seg = Segment { index, count: 3 };
                let feed =
                    Feed::new(&def(strategy), &header, &rows, &["a".into()], seg, 1).unwrap();
                let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
                while let Some(r) = feed.next(&mut rng) {
                    seen.push(r[0].0.clone());
                }
            }
            seen.sort_by_key(|s| s.parse::<u32>().unwrap());
            let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
            assert_eq!(seen, want, "{strategy:?}");
        }
        let circ = Feed::new(
            &def(FeedStrategy::Circular),
            &header,
            &rows,
            &["b".into()],
            Segment::WHOLE,
            1,
        )
        .unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
        assert!((0..25).all(|_| circ.next(&mut rng).is_some()));
    }
}
