-- 001_scaling_schema.sql: sprint S-1.5's scaling schema: community tiers and settings,
-- eligibility rules, audit logs, the scaling indexes, and row-level tenant isolation.
--
-- Idempotent: every step is guarded by a catalog check, so running the file again changes
-- nothing and takes no table locks. Run as the owner role; the roles arrakis_app and
-- arrakis_admin must exist (see migrations/README.md).
--
-- Isolation model: the tenant is the transaction-local setting app.current_tenant, set with
-- set_tenant_context(). '' and unset both mean "no tenant": zero rows, no error. The admin
-- bypass needs the flag app.is_admin = 'true' AND membership of arrakis_admin, so the
-- application role setting the flag itself gains nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'arrakis_app')
       OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'arrakis_admin') THEN
        RAISE EXCEPTION 'roles arrakis_app and arrakis_admin must exist before 001 runs'
            USING ERRCODE = 'undefined_object',
                  HINT = 'as a superuser: CREATE ROLE arrakis_app LOGIN PASSWORD ''...''; '
                      || 'CREATE ROLE arrakis_admin NOLOGIN; GRANT arrakis_admin TO <owner role>;';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- communities: theme, subscription tier (enforced), settings
-- ---------------------------------------------------------------------------------------------
-- (Guarded by catalog checks rather than ADD COLUMN IF NOT EXISTS, which still takes an ACCESS
-- EXCLUSIVE lock on a live table when the column exists.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'communities'::regclass
                   AND attname = 'theme_id' AND NOT attisdropped) THEN
        ALTER TABLE communities ADD COLUMN theme_id text;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'communities'::regclass
                   AND attname = 'subscription_tier' AND NOT attisdropped) THEN
        ALTER TABLE communities ADD COLUMN subscription_tier text NOT NULL DEFAULT 'free';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'communities'::regclass
                   AND attname = 'settings' AND NOT attisdropped) THEN
        ALTER TABLE communities ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb;
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'communities'::regclass
                     AND conname = 'communities_subscription_tier_check') THEN
        ALTER TABLE communities ADD CONSTRAINT communities_subscription_tier_check
            CHECK (subscription_tier IN ('free', 'pro', 'enterprise'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'communities'::regclass
                     AND conname = 'communities_settings_object_check') THEN
        ALTER TABLE communities ADD CONSTRAINT communities_settings_object_check
            CHECK (jsonb_typeof(settings) = 'object');
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- new tables
-- ---------------------------------------------------------------------------------------------

-- A token-gating rule: holders of min_balance of contract_address on chain are eligible.
CREATE TABLE IF NOT EXISTS eligibility_rules (
    id               uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id     uuid          NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    rule_type        text          NOT NULL
                     CHECK (rule_type IN ('token_balance', 'nft_ownership')),
    chain            text          NOT NULL CHECK (length(chain) BETWEEN 1 AND 50),
    contract_address text          NOT NULL CHECK (length(contract_address) BETWEEN 1 AND 128),
    -- numeric(78,0) holds any uint256 token amount in base units.
    min_balance      numeric(78,0) NOT NULL DEFAULT 0 CHECK (min_balance >= 0),
    enabled          boolean       NOT NULL DEFAULT true,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now()
);

-- Who did what to which tenant. Written through audit_action().
CREATE TABLE IF NOT EXISTS audit_logs (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    community_id uuid        NOT NULL REFERENCES communities (id) ON DELETE CASCADE,
    actor        text        NOT NULL,
    action       text        NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    target       text,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- indexes for scaling
-- ---------------------------------------------------------------------------------------------
-- (Guarded by name: CREATE INDEX IF NOT EXISTS still locks the table against writes.)
DO $$
BEGIN
    -- One community per guild; the gateway resolves guild -> community on every event.
    IF to_regclass('idx_communities_guild_id') IS NULL THEN
        CREATE UNIQUE INDEX idx_communities_guild_id ON communities (discord_guild_id);
    END IF;
    -- Wallet verification: a profile by (community, wallet).
    IF to_regclass('idx_profiles_community_wallet') IS NULL THEN
        CREATE INDEX idx_profiles_community_wallet ON profiles (community_id, wallet_address);
    END IF;
    -- Only enabled rules are ever evaluated.
    IF to_regclass('idx_eligibility_rules_community') IS NULL THEN
        CREATE INDEX idx_eligibility_rules_community ON eligibility_rules (community_id)
            WHERE enabled;
    END IF;
    -- A tenant's recent audit trail.
    IF to_regclass('idx_audit_logs_community_time') IS NULL THEN
        CREATE INDEX idx_audit_logs_community_time ON audit_logs (community_id, created_at DESC);
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- functions (all SECURITY INVOKER, each with a pinned search_path; created when missing)
-- ---------------------------------------------------------------------------------------------

-- The current tenant, or NULL when none is set. After a transaction-local setting ends,
-- current_setting() returns '' rather than NULL: casting that to uuid would raise, so '' and
-- NULL both become NULL here, and "community_id = NULL" matches no row.
DO $do$
BEGIN
    IF to_regprocedure('app_current_tenant()') IS NULL THEN
        CREATE FUNCTION app_current_tenant() RETURNS uuid
            LANGUAGE sql STABLE PARALLEL SAFE
            SET search_path = pg_catalog, pg_temp
        AS $fn$
            SELECT NULLIF(current_setting('app.current_tenant', true), '')::uuid
        $fn$;
    END IF;
END
$do$;

-- Whether this transaction runs with the admin bypass: the flag alone is not enough, the
-- current role must also be a member of arrakis_admin.
DO $do$
BEGIN
    IF to_regprocedure('app_is_admin()') IS NULL THEN
        CREATE FUNCTION app_is_admin() RETURNS boolean
            LANGUAGE sql STABLE PARALLEL SAFE
            SET search_path = pg_catalog, pg_temp
        AS $fn$
            SELECT coalesce(current_setting('app.is_admin', true), '') = 'true'
               AND pg_has_role(current_user, 'arrakis_admin', 'MEMBER')
        $fn$;
    END IF;
END
$do$;

-- Sets the tenant (and optionally the admin flag) for the current transaction only
-- (set_config(..., is_local => true)), so the setting cannot outlive the transaction on a
-- pooled server connection. Asking for admin without arrakis_admin membership is refused.
DO $do$
BEGIN
    IF to_regprocedure('set_tenant_context(uuid, boolean)') IS NULL THEN
        CREATE FUNCTION set_tenant_context(p_community_id uuid, p_is_admin boolean DEFAULT false)
            RETURNS void
            LANGUAGE plpgsql VOLATILE
            SET search_path = pg_catalog, pg_temp
        AS $fn$
        BEGIN
            IF coalesce(p_is_admin, false)
               AND NOT pg_has_role(current_user, 'arrakis_admin', 'MEMBER') THEN
                RAISE EXCEPTION 'role % may not use the admin bypass', current_user
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'the admin bypass needs membership of arrakis_admin';
            END IF;
            PERFORM set_config('app.current_tenant', coalesce(p_community_id::text, ''), true);
            PERFORM set_config('app.is_admin', CASE WHEN p_is_admin THEN 'true' ELSE '' END, true);
        END
        $fn$;
    END IF;
END
$do$;

-- Clears the tenant and admin flag, including any session-level value a careless client left
-- behind on a pooled server connection.
DO $do$
BEGIN
    IF to_regprocedure('clear_tenant_context()') IS NULL THEN
        CREATE FUNCTION clear_tenant_context() RETURNS void
            LANGUAGE plpgsql VOLATILE
            SET search_path = pg_catalog, pg_temp
        AS $fn$
        BEGIN
            PERFORM set_config('app.current_tenant', '', false);
            PERFORM set_config('app.is_admin', '', false);
        END
        $fn$;
    END IF;
END
$do$;

-- Records an action against the current tenant (or p_community_id, which row-level security
-- then checks like any insert). The actor defaults to the database role. Returns the row's id.
DO $do$
BEGIN
    IF to_regprocedure('audit_action(text, text, jsonb, text, uuid)') IS NULL THEN
        CREATE FUNCTION audit_action(
            p_action       text,
            p_target       text  DEFAULT NULL,
            p_metadata     jsonb DEFAULT '{}'::jsonb,
            p_actor        text  DEFAULT NULL,
            p_community_id uuid  DEFAULT NULL
        ) RETURNS uuid
            LANGUAGE plpgsql VOLATILE
            SET search_path = public, pg_temp
        AS $fn$
        DECLARE
            v_community uuid := coalesce(p_community_id, app_current_tenant());
            v_id        uuid;
        BEGIN
            IF v_community IS NULL THEN
                RAISE EXCEPTION 'audit_action: no tenant'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'call set_tenant_context() in this transaction first';
            END IF;
            INSERT INTO audit_logs (community_id, actor, action, target, metadata)
            VALUES (v_community, coalesce(p_actor, session_user::text), p_action, p_target,
                    coalesce(p_metadata, '{}'::jsonb))
            RETURNING id INTO v_id;
            RETURN v_id;
        END
        $fn$;
    END IF;
END
$do$;

DO $do$
BEGIN
    IF to_regprocedure('update_updated_at_column()') IS NULL THEN
        CREATE FUNCTION update_updated_at_column() RETURNS trigger
            LANGUAGE plpgsql
            SET search_path = pg_catalog, pg_temp
        AS $fn$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END
        $fn$;
    END IF;
END
$do$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['communities', 'profiles', 'eligibility_rules'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = t::regclass AND tgname = t || '_set_updated_at') THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW '
                           'EXECUTE FUNCTION update_updated_at_column()',
                           t || '_set_updated_at', t);
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- row-level security: enabled and forced (so the owner is subject to it too)
-- ---------------------------------------------------------------------------------------------
-- The policy's function calls are wrapped in scalar subqueries so PostgreSQL evaluates them once
-- per statement (an InitPlan), and the tenant predicate can drive an index scan.
--
-- The admin bypass is a second policy that applies only to members of arrakis_admin. Permissive
-- policies are OR-ed, and "community_id = $tenant OR $is_admin" in one policy defeats the index:
-- measured with the default dataset, the tenant read became a sequential scan of all 100k
-- profiles (23 ms instead of 0.1 ms). With the bypass in its own policy, the application role's
-- queries carry the tenant predicate alone.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['profiles', 'badges', 'eligibility_rules', 'audit_logs'] LOOP
        IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = t::regclass) THEN
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        END IF;
        IF NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = t::regclass) THEN
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policy
                       WHERE polrelid = t::regclass AND polname = 'tenant_isolation') THEN
            EXECUTE format(
                'CREATE POLICY tenant_isolation ON %I FOR ALL TO PUBLIC '
                'USING (community_id = (SELECT app_current_tenant())) '
                'WITH CHECK (community_id = (SELECT app_current_tenant()))',
                t);
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_policy
                       WHERE polrelid = t::regclass AND polname = 'admin_bypass') THEN
            EXECUTE format(
                'CREATE POLICY admin_bypass ON %I FOR ALL TO arrakis_admin '
                'USING ((SELECT app_is_admin())) '
                'WITH CHECK ((SELECT app_is_admin()))',
                t);
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- privileges of the application role: it owns nothing; it reads communities (guild lookup) and
-- reads and writes the tenant tables under row-level security.
-- ---------------------------------------------------------------------------------------------
DO $$
DECLARE
    t text;
    p text;
BEGIN
    IF NOT has_schema_privilege('arrakis_app', 'public', 'USAGE') THEN
        GRANT USAGE ON SCHEMA public TO arrakis_app;
    END IF;
    IF NOT has_table_privilege('arrakis_app', 'communities', 'SELECT') THEN
        GRANT SELECT ON communities TO arrakis_app;
    END IF;
    FOREACH t IN ARRAY ARRAY['profiles', 'badges', 'eligibility_rules', 'audit_logs'] LOOP
        FOREACH p IN ARRAY ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] LOOP
            IF NOT has_table_privilege('arrakis_app', t, p) THEN
                EXECUTE format('GRANT %s ON %I TO arrakis_app', p, t);
            END IF;
        END LOOP;
    END LOOP;
END
$$;
