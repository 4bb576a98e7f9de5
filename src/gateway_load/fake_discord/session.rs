//! Per-shard state of the fake: the current session with its replay log, and the connection
//! that currently owns it.
//!
//! The log holds every dispatch of the session in sequence order. A connection writes what lies
//! past `sent_upto`; a resume rewinds `sent_upto` to the client's sequence so the missed events
//! are written again. Entries the client confirmed by heartbeat are trimmed, and written entries
//! beyond `replay_capacity` are trimmed too, which bounds memory as Discord's own buffer does.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::Fault;

/// One identified session of one shard.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    /// Sequence of the last dispatch appended.
    pub seq: u64,
    /// Highest sequence written to the current connection.
    pub sent_upto: u64,
    log: VecDeque<(u64, Utf8Bytes)>,
}

impl Session {
    pub fn new(id: String) -> Self {
        Session {
            id,
            seq: 0,
            sent_upto: 0,
            log: VecDeque::new(),
        }
    }

    /// Appends a dispatch built for sequence `self.seq + 1` by `build`.
    pub fn push_with(&mut self, build: impl FnOnce(u64) -> String) {
        self.seq += 1;
        let text = build(self.seq);
        self.log.push_back((self.seq, Utf8Bytes::from(text)));
    }

    /// Dispatches not yet written, marking them written.
    pub fn take_unsent(&mut self, out: &mut Vec<Utf8Bytes>) {
        let from = self.sent_upto;
        // The log is in sequence order; skip what was written (binary search on the seq).
        let start = self.log.partition_point(|(seq, _)| *seq <= from);
        out.extend(self.log.iter().skip(start).map(|(_, text)| text.clone()));
        self.sent_upto = self.seq;
    }

    /// Number of dispatches appended but not yet written.
    pub fn unsent(&self) -> u64 {
        self.seq - self.sent_upto
    }

    /// Whether a client that last saw `seq` can resume: everything after it is still logged.
    pub fn can_resume_from(&self, seq: u64) -> bool {
        if seq > self.seq {
            return false;
        }
        match self.log.front() {
            Some((first, _)) => *first <= seq + 1,
            None => seq == self.seq,
        }
    }

    /// Rewinds to the client's sequence so the missed dispatches are written again.
    pub fn rewind_to(&mut self, seq: u64) {
        self.sent_upto = seq;
    }

    /// Drops entries the client confirmed and written entries beyond `capacity`.
    pub fn trim(&mut self, acked: u64, capacity: usize) {
        while let Some((seq, _)) = self.log.front() {
            let confirmed = *seq <= acked;
            let overflow = self.log.len() > capacity && *seq <= self.sent_upto;
            if confirmed || overflow {
                self.log.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The connection that currently serves a shard.
#[derive(Debug)]
pub(crate) struct ConnectionLink {
    pub id: u64,
    pub cancel: CancellationToken,
    pub faults: mpsc::UnboundedSender<Fault>,
    /// Woken when the session has unsent dispatches.
    pub wake: Arc<Notify>,
}

/// Everything the fake knows about one shard.
#[derive(Debug, Default)]
pub(crate) struct ShardState {
    pub session: Option<Session>,
    pub connection: Option<ConnectionLink>,
    /// Member events emitted on this shard (the next event's id).
    pub events_sent: u64,
    /// Member events that were due while the shard had no session (never sent, as on Discord).
    pub events_skipped: u64,
    /// Identifies and resumes that succeeded.
    pub identifies: u64,
    pub resumes: u64,
    /// Dispatches written again because a client resumed from before them.
    pub replayed: u64,
}

impl ShardState {
    /// Replaces the serving connection, closing the previous one.
    pub fn attach(&mut self, link: ConnectionLink) {
        if let Some(old) = self.connection.replace(link) {
            old.cancel.cancel();
        }
    }

    /// Whether connection `id` still serves this shard.
    pub fn is_served_by(&self, id: u64) -> bool {
        self.connection.as_ref().is_some_and(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_with(n: u64) -> Session {
        let mut s = Session::new("s".into());
        for _ in 0..n {
            s.push_with(|seq| seq.to_string());
        }
        s
    }

    #[test]
    fn resume_rewinds_and_replays_missed_dispatches() {
        let mut s = session_with(5);
        let mut out = Vec::new();
        s.take_unsent(&mut out);
        assert_eq!(out.len(), 5);
        assert!(s.can_resume_from(3));
        s.rewind_to(3);
        out.clear();
        s.take_unsent(&mut out);
        assert_eq!(
            out.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            ["4", "5"]
        );
    }

    #[test]
    fn trimmed_sessions_cannot_resume_from_before_the_log() {
        let mut s = session_with(10);
        let mut out = Vec::new();
        s.take_unsent(&mut out);
        s.trim(4, 100);
        assert!(s.can_resume_from(4));
        assert!(!s.can_resume_from(2));
        s.trim(0, 3);
        assert!(!s.can_resume_from(6));
        assert!(s.can_resume_from(7));
        assert!(!s.can_resume_from(11));
    }
}
