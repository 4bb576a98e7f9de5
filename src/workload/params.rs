//! Query parameters drawn from the dataset: all parameters of one execution describe the same
//! random profile, so `community_id` + `wallet` find a row that exists.

use std::sync::Arc;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use uuid::Uuid;

use crate::dataset::DatasetSpec;
use crate::scenario::ParamKind;

/// A random profile: community index and profile index within it, and the feeder row the
/// iteration took, if its scenario has a feeder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    /// Community index, `0..communities`.
    pub community: u32,
    /// Profile index within the community, `0..profiles_per_community`.
    pub profile: u32,
    /// The scenario's feeder columns of this iteration's row.
    pub row: Option<FeedRow>,
}

/// A feeder value: sent as text, which the server parses as whatever type the parameter has
/// (`uuid`, `bigint`, `text`, ...), as it would a literal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FeedValue(pub String);

/// One feeder row, projected onto the columns a scenario uses.
pub type FeedRow = Arc<[FeedValue]>;

impl ToSql for FeedValue {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The SQL type a parameter is sent as.
pub fn sql_type(kind: ParamKind) -> Type {
    match kind {
        ParamKind::CommunityId | ParamKind::ProfileId => Type::UUID,
        ParamKind::GuildId | ParamKind::DiscordUserId => Type::INT8,
        ParamKind::Wallet => Type::TEXT,
        // Unknown: the server infers it from where the parameter stands.
        ParamKind::Column(_) => Type::UNKNOWN,
    }
}

/// The values of one draw.
pub(crate) struct Values<'a> {
    pub community: Uuid,
    guild: i64,
    profile: Uuid,
    discord_user: i64,
    wallet: &'a String,
    row: Option<FeedRow>,
    missing: FeedValue,
}

impl<'a> Values<'a> {
    pub fn new(spec: &DatasetSpec, draw: Draw, wallet_buf: &'a mut String) -> Values<'a> {
        spec.write_wallet(draw.community, draw.profile, wallet_buf);
        Values {
            community: spec.community_id(draw.community),
            guild: spec.guild_id(draw.community),
            profile: spec.profile_id(draw.community, draw.profile),
            discord_user: spec.discord_user_id(draw.community, draw.profile),
            wallet: wallet_buf,
            row: draw.row,
            missing: FeedValue::default(),
        }
    }

    /// The tenant as text, written into `buf` (no allocation per query).
    pub fn community_text<'b>(&self, buf: &'b mut [u8; 36]) -> &'b str {
        self.community.hyphenated().encode_lower(buf)
    }

    fn value(&self, kind: ParamKind) -> &(dyn ToSql + Sync) {
        match kind {
            ParamKind::CommunityId => &self.community,
            ParamKind::GuildId => &self.guild,
            ParamKind::ProfileId => &self.profile,
            ParamKind::DiscordUserId => &self.discord_user,
            ParamKind::Wallet => self.wallet,
            ParamKind::Column(i) => self.column(i),
        }
    }

    /// Parameter references with their types, in `$n` order.
    pub fn refs(&self, kinds: &[ParamKind]) -> Vec<(&(dyn ToSql + Sync), Type)> {
        kinds
            .iter()
            .map(|k| (self.value(*k), sql_type(*k)))
            .collect()
    }

    /// Writes a parameter as a SQL literal (simple protocol). Values are generated uuids,
    /// integers and hex strings, so quoting cannot be escaped; quotes are doubled anyway.
    pub fn write_literal(&self, kind: ParamKind, out: &mut String) {
        use std::fmt::Write;
        let _ = match kind {
            ParamKind::CommunityId => write!(out, "'{}'::uuid", self.community),
            ParamKind::ProfileId => write!(out, "'{}'::uuid", self.profile),
            ParamKind::GuildId => write!(out, "{}", self.guild),
            ParamKind::DiscordUserId => write!(out, "{}", self.discord_user),
            ParamKind::Wallet if self.wallet.contains('\'') => {
                write!(out, "'{}'", self.wallet.replace('\'', "''"))
            }
            ParamKind::Wallet => write!(out, "'{}'", self.wallet),
            ParamKind::Column(i) => write!(out, "'{}'", self.column(i).0.replace('\'', "''")),
        };
    }

    fn column(&self, i: u16) -> &FeedValue {
        self.row
            .as_ref()
            .and_then(|r| r.get(usize::from(i)))
            .unwrap_or(&self.missing)
    }
}
