//! The fake Discord's world: which guilds each shard owns and which users are their members.
//!
//! Everything is derived from indices, so the fake, the harness and the tests agree on ids
//! without sharing state. Guild ids follow Discord's sharding rule, `(guild_id >> 22) % total ==
//! shard`, so a gateway that checks it finds every guild on the right shard.

/// Guilds and members of one run, split over `total_shards` shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    /// Guilds over all shards.
    pub guilds: u32,
    /// Members in each guild.
    pub members_per_guild: u32,
    /// The bot's shard count; guild ids are spread over it by Discord's rule.
    pub total_shards: u32,
}

/// Offset that makes ids look like real snowflakes (a plausible timestamp part).
const SNOWFLAKE_BASE: u64 = 1_000_000_000;
/// First user id of the members; user ids never collide with guild or role ids.
const USER_BASE: u64 = 100_000_000_000_000;
/// The bot's own user id and application id.
pub const BOT_USER_ID: u64 = 90_000_000_000_000;

impl World {
    /// Number of guilds on `shard` (guild `g` lives on shard `g % total_shards`).
    pub fn guilds_on_shard(&self, shard: u32) -> u32 {
        let total = self.total_shards.max(1);
        if shard >= total {
            return 0;
        }
        self.guilds / total + u32::from(shard < self.guilds % total)
    }

    /// Global index of the `local`-th guild of `shard`.
    pub fn guild_index(&self, shard: u32, local: u32) -> u64 {
        u64::from(local) * u64::from(self.total_shards.max(1)) + u64::from(shard)
    }

    /// Snowflake of guild `index`; `(id >> 22) % total_shards == index % total_shards`.
    pub fn guild_id(&self, index: u64) -> u64 {
        let total = u64::from(self.total_shards.max(1));
        let shard = index % total;
        let k = index / total;
        ((SNOWFLAKE_BASE + k) * total + shard) << 22
    }

    /// Role every member of guild `index` holds (the guild's `@everyone` role is the guild id).
    pub fn member_role_id(&self, index: u64) -> u64 {
        self.guild_id(index) + 1
    }

    /// User id of member `member` of guild `index`; members beyond `members_per_guild` are
    /// users who join later (GUILD_MEMBER_ADD).
    pub fn user_id(&self, index: u64, member: u64) -> u64 {
        USER_BASE + index * 1_000_000 + member
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guilds_split_over_shards_and_follow_the_sharding_rule() {
        let world = World {
            guilds: 10,
            members_per_guild: 3,
            total_shards: 4,
        };
        let counts: Vec<u32> = (0..4).map(|s| world.guilds_on_shard(s)).collect();
        assert_eq!(counts, vec![3, 3, 2, 2]);
        assert_eq!(counts.iter().sum::<u32>(), 10);
        for shard in 0..4 {
            for local in 0..world.guilds_on_shard(shard) {
                let id = world.guild_id(world.guild_index(shard, local));
                assert_eq!((id >> 22) % 4, u64::from(shard));
            }
        }
        assert_eq!(world.guilds_on_shard(4), 0);
    }
}
