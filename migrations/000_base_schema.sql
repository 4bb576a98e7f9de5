-- 000_base_schema.sql: the Arrakis tables that 001_scaling_schema.sql extends.
--
-- Run as the owner role (arrakis_owner); thumper's runner wraps the file in a transaction.
-- Every statement is guarded, so re-running the file is harmless.

-- A community is a tenant: one Discord guild.
CREATE TABLE IF NOT EXISTS communities (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    discord_guild_id bigint      NOT NULL CHECK (discord_guild_id > 0),
    name             text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A member of a community, with the wallet they verified.
CREATE TABLE IF NOT EXISTS profiles (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id    uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    discord_user_id bigint      NOT NULL CHECK (discord_user_id > 0),
    wallet_address  text        CHECK (length(wallet_address) BETWEEN 1 AND 128),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- One profile per Discord user per community; also the tenant-leading index for scans.
    CONSTRAINT profiles_community_user_key UNIQUE (community_id, discord_user_id),
    -- Target of badges' composite foreign key, so a badge cannot name another tenant's profile.
    CONSTRAINT profiles_id_community_key UNIQUE (id, community_id)
);

-- A badge awarded to a profile; always in the profile's own community.
CREATE TABLE IF NOT EXISTS badges (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    profile_id   uuid        NOT NULL,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    awarded_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT badges_profile_fkey FOREIGN KEY (profile_id, community_id)
        REFERENCES profiles (id, community_id) ON DELETE CASCADE,
    CONSTRAINT badges_profile_name_key UNIQUE (profile_id, name)
);

CREATE INDEX IF NOT EXISTS badges_community_idx ON badges (community_id);
