//! The deterministic Arrakis dataset: communities (tenants), their profiles, badges, eligibility
//! rules and audit logs, all derived from one seed number.
//!
//! Every identifier is a pure function of `(seed, index)`, so a virtual user can draw "a random
//! existing tenant" or "a random existing wallet" without reading the database and without any
//! shared state, and a `--target` database seeded earlier with the same spec gives the same rows.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod seed;

/// How big the dataset is and which seed generates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSpec {
    /// Seed number every identifier derives from.
    pub seed: u64,
    /// Number of communities (tenants).
    pub communities: u32,
    /// Profiles per community.
    pub profiles_per_community: u32,
    /// Eligibility rules per community (every third one disabled).
    pub rules_per_community: u32,
    /// Badges per community (awarded round-robin to its profiles).
    pub badges_per_community: u32,
    /// Audit log rows per community.
    pub audit_logs_per_community: u32,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        DatasetSpec {
            seed: 1,
            communities: 1_000,
            profiles_per_community: 100,
            rules_per_community: 3,
            badges_per_community: 20,
            audit_logs_per_community: 10,
        }
    }
}

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash used to derive identifiers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Domain separation between the kinds of identifier.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Kind {
    Community = 1,
    Guild = 2,
    Profile = 3,
    DiscordUser = 4,
    Wallet = 5,
    Rule = 6,
    Badge = 7,
    Audit = 8,
}

impl DatasetSpec {
    fn hash(&self, kind: Kind, index: u64, word: u64) -> u64 {
        mix(mix(mix(self.seed ^ ((kind as u64) << 56)) ^ index) ^ word)
    }

    fn uuid(&self, kind: Kind, index: u64) -> Uuid {
        let hi = self.hash(kind, index, 0);
        let lo = self.hash(kind, index, 1);
        // Shape it as a version-4 UUID so it looks like what the application generates.
        uuid::Builder::from_random_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
            .into_uuid()
    }

    /// Total number of profiles.
    pub fn profile_count(&self) -> u64 {
        u64::from(self.communities) * u64::from(self.profiles_per_community)
    }

    /// The id of community `c` (`0 <= c < communities`).
    pub fn community_id(&self, c: u32) -> Uuid {
        self.uuid(Kind::Community, u64::from(c))
    }

    /// The Discord guild id (snowflake) of community `c`, unique within the dataset.
    pub fn guild_id(&self, c: u32) -> i64 {
        // Snowflakes are 63-bit positive; keep the index in the low bits so ids never collide.
        let high = (self.hash(Kind::Guild, u64::from(c), 0) >> 33) << 32;
        ((high | u64::from(c)) & (i64::MAX as u64)) as i64
    }

    /// The id of profile `p` of community `c`.
    pub fn profile_id(&self, c: u32, p: u32) -> Uuid {
        self.uuid(Kind::Profile, self.profile_index(c, p))
    }

    /// The Discord user id of profile `p` of community `c`.
    pub fn discord_user_id(&self, c: u32, p: u32) -> i64 {
        let i = self.profile_index(c, p);
        let high = (self.hash(Kind::DiscordUser, i, 0) >> 40) << 32;
        ((high | (i & 0xffff_ffff)) & (i64::MAX as u64)) as i64
    }

    /// The wallet address of profile `p` of community `c`: `0x` and 40 lowercase hex digits.
    pub fn wallet(&self, c: u32, p: u32) -> String {
        let mut out = String::with_capacity(42);
        self.write_wallet(c, p, &mut out);
        out
    }

    /// Writes the wallet address into `out` (cleared first), so a hot path can reuse a buffer.
    pub fn write_wallet(&self, c: u32, p: u32, out: &mut String) {
        use std::fmt::Write;
        let i = self.profile_index(c, p);
        let a = self.hash(Kind::Wallet, i, 0);
        let b = self.hash(Kind::Wallet, i, 1);
        let d = self.hash(Kind::Wallet, i, 2) as u32;
        out.clear();
        let _ = write!(out, "0x{a:016x}{b:016x}{d:08x}");
    }

    /// The id of eligibility rule `r` of community `c`.
    pub fn rule_id(&self, c: u32, r: u32) -> Uuid {
        self.uuid(
            Kind::Rule,
            u64::from(c) * u64::from(self.rules_per_community.max(1)) + u64::from(r),
        )
    }

    /// The id of badge `b` of community `c`.
    pub fn badge_id(&self, c: u32, b: u32) -> Uuid {
        self.uuid(
            Kind::Badge,
            u64::from(c) * u64::from(self.badges_per_community.max(1)) + u64::from(b),
        )
    }

    /// The id of audit log row `a` of community `c`.
    pub fn audit_id(&self, c: u32, a: u32) -> Uuid {
        self.uuid(
            Kind::Audit,
            u64::from(c) * u64::from(self.audit_logs_per_community.max(1)) + u64::from(a),
        )
    }

    fn profile_index(&self, c: u32, p: u32) -> u64 {
        u64::from(c) * u64::from(self.profiles_per_community) + u64::from(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn identifiers_are_deterministic_and_seed_dependent() {
        let a = DatasetSpec::default();
        let b = DatasetSpec { seed: 2, ..a };
        assert_eq!(a.community_id(7), a.community_id(7));
        assert_ne!(a.community_id(7), b.community_id(7));
        assert_eq!(a.wallet(3, 4), a.wallet(3, 4));
        assert_ne!(a.wallet(3, 4), b.wallet(3, 4));
    }

    #[test]
    fn identifiers_are_unique_across_the_default_dataset() {
        let spec = DatasetSpec::default();
        let mut guilds = HashSet::new();
        let mut wallets = HashSet::new();
        for c in 0..spec.communities {
            assert!(guilds.insert(spec.guild_id(c)));
            assert!(spec.guild_id(c) > 0);
            for p in 0..spec.profiles_per_community {
                assert!(wallets.insert(spec.wallet(c, p)));
            }
        }
        let w = spec.wallet(0, 0);
        assert_eq!(w.len(), 42);
        assert!(w.starts_with("0x") && w[2..].chars().all(|ch| ch.is_ascii_hexdigit()));
    }
}
