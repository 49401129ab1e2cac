/*
 * notify--1.0.sql
 *
 * Schema and SQL API of the notify extension.
 *
 * Tables live in schema "notify"; the functions an application calls live
 * in the extension's own schema (public by default), so that
 * SELECT notify_send(...) works right after CREATE EXTENSION.
 *
 * Data flow (see README, "Architecture"):
 *   notify_send() -> notify.notifications (one row per request, rendered
 *   content per channel) -> notify.outbox (one row per destination, the
 *   hot queue that workers claim) -> on a final outcome the row moves to
 *   notify.deliveries (append-only history); retried attempts are kept in
 *   notify.attempts.
 *
 * Everything an application calls is SECURITY DEFINER with a pinned
 * search_path; the tables themselves are not readable by PUBLIC.
 */

\echo Use "CREATE EXTENSION notify" to load this file. \quit

CREATE SCHEMA notify;
COMMENT ON SCHEMA notify IS 'notify: tables, views and internals of the notify extension';
REVOKE ALL ON SCHEMA notify FROM PUBLIC;

/* ------------------------------------------------------------------------
 * Contacts
 * ------------------------------------------------------------------------ */

CREATE TABLE notify.recipients (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	external_id text NOT NULL UNIQUE,
	email		text,
	phone		text,
	locale		text,
	timezone	text,
	attributes	jsonb NOT NULL DEFAULT '{}',
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT recipients_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{0,14}$'),
	CONSTRAINT recipients_attributes_object CHECK (jsonb_typeof(attributes) = 'object')
);
COMMENT ON TABLE notify.recipients IS 'people notify can reach, keyed by the application''s own user id (external_id)';

CREATE TABLE notify.devices (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	recipient_id bigint NOT NULL REFERENCES notify.recipients (id) ON DELETE CASCADE,
	platform	text NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
	-- ios/android: the APNS/FCM token; web: the subscription's endpoint URL
	token		text NOT NULL,
	-- web only: the browser's PushSubscription {endpoint, keys {p256dh, auth}}
	subscription jsonb,
	-- optional provider instance (notify.providers.name) for this device's app
	app			text,
	active		boolean NOT NULL DEFAULT true,
	last_error	text,
	deactivated_at timestamptz,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now(),
	UNIQUE (platform, token)
);
CREATE INDEX devices_recipient ON notify.devices (recipient_id) WHERE active;
COMMENT ON TABLE notify.devices IS 'push destinations: APNS and FCM tokens, Web Push subscriptions';

CREATE TABLE notify.preferences (
	recipient_id bigint NOT NULL REFERENCES notify.recipients (id) ON DELETE CASCADE,
	channel		text NOT NULL CHECK (channel IN ('push', 'sms', 'email', 'webhook')),
	category	text,			-- NULL: the whole channel
	enabled		boolean NOT NULL,
	source		text NOT NULL DEFAULT 'api',	-- api, sms_stop, unsubscribe, admin
	updated_at	timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT preferences_key UNIQUE NULLS NOT DISTINCT (recipient_id, channel, category)
);
COMMENT ON TABLE notify.preferences IS 'opt-ins and opt-outs; no row means enabled, a category row beats the channel row';

CREATE TABLE notify.frequency_caps (
	channel		text NOT NULL CHECK (channel IN ('push', 'sms', 'email', 'webhook')),
	category	text,			-- NULL: every category
	max_count	integer NOT NULL CHECK (max_count > 0),
	per			interval NOT NULL CHECK (per > interval '0'),
	CONSTRAINT frequency_caps_key UNIQUE NULLS NOT DISTINCT (channel, category)
);
COMMENT ON TABLE notify.frequency_caps IS 'at most max_count notifications per recipient on a channel (and category) within per; more are suppressed';

CREATE TABLE notify.groups (
	name		text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE notify.group_members (
	group_name	text NOT NULL REFERENCES notify.groups (name) ON DELETE CASCADE,
	recipient_id bigint NOT NULL REFERENCES notify.recipients (id) ON DELETE CASCADE,
	PRIMARY KEY (group_name, recipient_id)
);
CREATE INDEX group_members_recipient ON notify.group_members (recipient_id);
COMMENT ON TABLE notify.groups IS 'named recipient groups for notify_send_group()';

CREATE TABLE notify.bulk_sends (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	group_name	text NOT NULL,
	template	text NOT NULL,
	params		jsonb NOT NULL,
	channels	text[],
	category	text,
	priority	smallint NOT NULL,
	send_at		timestamptz,
	expires_at	timestamptz,
	recipients	integer NOT NULL,
	status		text NOT NULL CHECK (status IN ('pending_approval', 'sent', 'rejected')),
	requested_by name NOT NULL DEFAULT session_user,
	decided_by	name,
	created_at	timestamptz NOT NULL DEFAULT now(),
	decided_at	timestamptz
);
COMMENT ON TABLE notify.bulk_sends IS 'group sends; above notify.approval_threshold recipients they wait for notify_approve()';

/* ------------------------------------------------------------------------
 * Templates and providers
 * ------------------------------------------------------------------------ */

CREATE TABLE notify.templates (
	name		text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
	channel		text NOT NULL CHECK (channel IN ('push', 'sms', 'email', 'webhook')),
	locale		text NOT NULL DEFAULT '',	-- '' is the default locale
	version		integer NOT NULL CHECK (version > 0),
	content		jsonb NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	created_by	name NOT NULL DEFAULT session_user,
	PRIMARY KEY (name, channel, locale, version)
);
COMMENT ON TABLE notify.templates IS 'message templates per channel and locale; every change is a new version, old versions are kept';

CREATE TABLE notify.providers (
	name		text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
	kind		text NOT NULL CHECK (kind IN ('apns', 'fcm', 'webpush', 'twilio', 'smtp', 'webhook')),
	config		jsonb NOT NULL DEFAULT '{}',	-- holds secrets: never exposed
	enabled		boolean NOT NULL DEFAULT true,
	paused		boolean NOT NULL DEFAULT false,
	created_at	timestamptz NOT NULL DEFAULT now(),
	updated_at	timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notify.providers IS 'provider instances and their configuration; config holds secrets and is readable only by the extension owner';

/* ------------------------------------------------------------------------
 * Sending: requests, the hot outbox, and history
 * ------------------------------------------------------------------------ */

CREATE TABLE notify.notifications (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	recipient_id bigint NOT NULL REFERENCES notify.recipients (id) ON DELETE CASCADE,
	recipient	text NOT NULL,	-- external_id at send time
	template	text NOT NULL,
	params		jsonb NOT NULL,
	-- rendered content per channel: {"push": {...}, "email": {...}}
	rendered	jsonb NOT NULL,
	-- template version used per channel: {"push": 3, "email": 1}
	versions	jsonb NOT NULL,
	category	text,
	priority	smallint NOT NULL DEFAULT 0,
	send_at		timestamptz,
	expires_at	timestamptz,
	idempotency_key text,
	created_at	timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX notifications_idempotency ON notify.notifications (idempotency_key)
	WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_recipient ON notify.notifications (recipient_id, id);
COMMENT ON TABLE notify.notifications IS 'one row per send request, with the content rendered at send time';

/*
 * The outbox holds only deliveries that are not finished: queued, in flight
 * or waiting for a retry.  A final outcome moves the row to
 * notify.deliveries, so the claim index stays as small as the backlog no
 * matter how much history accumulates.  A claim changes only status,
 * attempts and lease_until, none of them indexed, so claims are HOT
 * updates.
 */
CREATE TABLE notify.outbox (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	notification_id bigint NOT NULL,
	recipient_id bigint NOT NULL,
	channel		text NOT NULL,
	provider	text NOT NULL,
	destination text NOT NULL,
	device_id	bigint,
	priority	smallint NOT NULL,
	status		text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'inflight', 'retry')),
	attempts	integer NOT NULL DEFAULT 0,
	-- attempts made before an operator requeued it (max_attempts counts from here)
	attempt_base integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz NOT NULL,
	lease_until timestamptz,
	expires_at	timestamptz,
	last_error	text,
	created_at	timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50,		-- room on the page for a claim's new row version: HOT
		autovacuum_vacuum_scale_factor = 0.01,
		autovacuum_vacuum_insert_scale_factor = 0.01,
		autovacuum_vacuum_cost_delay = 0);
CREATE INDEX outbox_claim ON notify.outbox (provider, priority DESC, next_attempt_at, id);
CREATE INDEX outbox_notification ON notify.outbox (notification_id);
COMMENT ON TABLE notify.outbox IS 'deliveries not yet finished; workers claim rows here with FOR UPDATE SKIP LOCKED';

CREATE TABLE notify.deliveries (
	id			bigint PRIMARY KEY,	-- the outbox id it had
	notification_id bigint NOT NULL,
	recipient_id bigint NOT NULL,
	channel		text NOT NULL,
	provider	text,
	destination text,
	device_id	bigint,
	priority	smallint NOT NULL,
	status		text NOT NULL CHECK (status IN ('sent', 'failed', 'dead', 'expired', 'suppressed', 'skipped', 'cancelled')),
	attempts	integer NOT NULL DEFAULT 0,
	last_error	text,
	provider_status integer,
	provider_message_id text,
	segments	smallint,		-- SMS parts the provider billed
	created_at	timestamptz NOT NULL,
	sent_at		timestamptz,
	finished_at timestamptz NOT NULL DEFAULT now(),
	delivered_at timestamptz,
	opened_at	timestamptz,
	clicked_at	timestamptz
);
CREATE INDEX deliveries_notification ON notify.deliveries (notification_id);
CREATE INDEX deliveries_finished ON notify.deliveries (finished_at);
CREATE INDEX deliveries_dead ON notify.deliveries (provider, finished_at) WHERE status IN ('dead', 'failed');
COMMENT ON TABLE notify.deliveries IS 'finished deliveries (sent, failed, dead, expired, suppressed, skipped, cancelled): append-only history';

CREATE TABLE notify.attempts (
	outbox_id	bigint NOT NULL,
	attempt		integer NOT NULL,
	at			timestamptz NOT NULL DEFAULT now(),
	outcome		text NOT NULL,	-- retry (final attempts live in deliveries)
	provider_status integer,
	error		text,
	PRIMARY KEY (outbox_id, attempt)
);
CREATE INDEX attempts_at ON notify.attempts (at);	-- the retention purge
COMMENT ON TABLE notify.attempts IS 'attempts that did not finish a delivery (the retried ones); the final attempt is the deliveries row';

/* ------------------------------------------------------------------------
 * Internal C functions
 * ------------------------------------------------------------------------ */

CREATE FUNCTION notify._render(content jsonb, channel text, params jsonb, attributes jsonb, template_name text)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'notify_render_sql'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION notify._check_template(content jsonb, channel text, template_name text)
RETURNS void
AS 'MODULE_PATHNAME', 'notify_check_template_sql'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION notify._template_vars(content jsonb)
RETURNS text[]
AS 'MODULE_PATHNAME', 'notify_template_vars_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Refuses a provider configuration the provider could not use.
CREATE FUNCTION notify._check_provider_config(kind text, config jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'notify_check_provider_config'
LANGUAGE C STABLE STRICT;

-- The configuration with every secret replaced by '********'.
CREATE FUNCTION notify._mask_secrets(kind text, config jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'notify_mask_secrets'
LANGUAGE C IMMUTABLE STRICT;

-- Refuses a rendered push message over the provider's payload limit.
CREATE FUNCTION notify._check_payload(kind text, provider text, message jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'notify_check_payload'
LANGUAGE C IMMUTABLE STRICT;

-- Wakes the workers of these providers when the calling transaction commits.
CREATE FUNCTION notify._wake_on_commit(providers text[])
RETURNS void
AS 'MODULE_PATHNAME', 'notify_wake_on_commit'
LANGUAGE C VOLATILE STRICT;

-- Tells the launcher that providers changed (start/stop workers).
CREATE FUNCTION notify._providers_changed()
RETURNS void
AS 'MODULE_PATHNAME', 'notify_providers_changed'
LANGUAGE C VOLATILE;

-- True when notify is in shared_preload_libraries (workers can run).
CREATE FUNCTION notify._workers_loaded()
RETURNS boolean
AS 'MODULE_PATHNAME', 'notify_workers_loaded'
LANGUAGE C STABLE;

/*
 * notify_send() keeps templates, provider instances and frequency caps in
 * memory (src/send.c); any change to them tells every session to read
 * them again (also under session_replication_role = replica).
 */
CREATE FUNCTION notify._config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'notify_config_changed'
LANGUAGE C;

CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notify.templates
	FOR EACH STATEMENT EXECUTE FUNCTION notify._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notify.providers
	FOR EACH STATEMENT EXECUTE FUNCTION notify._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notify.frequency_caps
	FOR EACH STATEMENT EXECUTE FUNCTION notify._config_changed();
ALTER TABLE notify.templates ENABLE ALWAYS TRIGGER config_changed;
ALTER TABLE notify.providers ENABLE ALWAYS TRIGGER config_changed;
ALTER TABLE notify.frequency_caps ENABLE ALWAYS TRIGGER config_changed;

/* ------------------------------------------------------------------------
 * Internal SQL helpers
 * ------------------------------------------------------------------------ */

CREATE FUNCTION notify._check_channel(p_channel text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF p_channel IS NULL OR p_channel NOT IN ('push', 'sms', 'email', 'webhook') THEN
		RAISE EXCEPTION 'unknown channel "%"', p_channel
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Channels are push, sms, email and webhook.';
	END IF;
END;
$$;

CREATE FUNCTION notify._recipient_id(p_recipient text)
RETURNS bigint
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_id bigint;
BEGIN
	SELECT r.id INTO v_id FROM notify.recipients r WHERE r.external_id = p_recipient;
	IF v_id IS NULL THEN
		RAISE EXCEPTION 'unknown recipient "%"', p_recipient
			USING ERRCODE = 'no_data_found',
				  HINT = 'Create it first with notify_upsert_recipient().';
	END IF;
	RETURN v_id;
END;
$$;

/*
 * Which provider instance delivers for a kind: the one a device names (its
 * app), else the instance named like the kind, else the only enabled
 * instance of that kind.
 */
CREATE FUNCTION notify._provider_for(p_kind text, p_app text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_name text;
	v_kind text;
	v_count int;
BEGIN
	IF p_app IS NOT NULL THEN
		SELECT p.kind INTO v_kind FROM notify.providers p WHERE p.name = p_app;
		IF v_kind = p_kind THEN
			RETURN p_app;
		END IF;
	END IF;
	IF EXISTS (SELECT 1 FROM notify.providers p WHERE p.name = p_kind AND p.kind = p_kind) THEN
		RETURN p_kind;
	END IF;
	SELECT min(p.name), count(*) INTO v_name, v_count
	  FROM notify.providers p WHERE p.kind = p_kind AND p.enabled;
	IF v_count = 1 THEN
		RETURN v_name;
	END IF;
	IF v_count > 1 THEN
		RAISE EXCEPTION 'several % providers are configured and none is named "%"', p_kind, p_kind
			USING ERRCODE = 'ambiguous_parameter',
				  HINT = 'Name one provider after its kind, or register devices with app => the provider name.';
	END IF;
	RAISE EXCEPTION 'no % provider is configured', p_kind
		USING ERRCODE = 'undefined_object',
			  HINT = format('Configure one with notify_set_provider(%L, %L, config).', p_kind, p_kind);
END;
$$;

-- The locales to try for a recipient: exact, then language, then default.
CREATE FUNCTION notify._locale_chain(p_locale text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE
		WHEN p_locale IS NULL OR p_locale = '' THEN ARRAY['']
		WHEN split_part(replace(p_locale, '_', '-'), '-', 1) <> p_locale
			THEN ARRAY[p_locale, split_part(replace(p_locale, '_', '-'), '-', 1), '']
		ELSE ARRAY[p_locale, '']
	END
$$;

/* ------------------------------------------------------------------------
 * Contacts API
 * ------------------------------------------------------------------------ */

CREATE FUNCTION notify_upsert_recipient(recipient text,
										email text DEFAULT NULL,
										phone text DEFAULT NULL,
										locale text DEFAULT NULL,
										timezone text DEFAULT NULL,
										attributes jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_id bigint;
BEGIN
	IF recipient IS NULL OR length(recipient) = 0 OR length(recipient) > 256 THEN
		RAISE EXCEPTION 'recipient id must be between 1 and 256 characters'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use your application''s own user id.';
	END IF;
	IF email IS NOT NULL AND email !~ '^[^@\s<>(),;:"\[\]\\]+@[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$' THEN
		RAISE EXCEPTION 'invalid email address "%"', email
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give an address like name@example.com, without a display name.';
	END IF;
	IF phone IS NOT NULL AND phone !~ '^\+[1-9][0-9]{0,14}$' THEN
		RAISE EXCEPTION 'phone number "%" is not in E.164 format', phone
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Write it as + then country code and number, digits only, at most 15: +14155550123.';
	END IF;
	IF timezone IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = timezone) THEN
		RAISE EXCEPTION 'unknown time zone "%"', timezone
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use an IANA name such as Europe/Berlin (see pg_timezone_names).';
	END IF;
	IF locale IS NOT NULL AND locale !~ '^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$' THEN
		RAISE EXCEPTION 'invalid locale "%"', locale
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a BCP 47 tag such as en, pt-BR or zh-Hant-TW.';
	END IF;
	IF attributes IS NOT NULL AND jsonb_typeof(attributes) <> 'object' THEN
		RAISE EXCEPTION 'attributes must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass something like ''{"first_name": "Ada"}''::jsonb.';
	END IF;
	IF attributes ? 'quiet_hours' AND coalesce(attributes->>'quiet_hours', '')
		!~ '^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
		RAISE EXCEPTION 'quiet_hours must look like "22:00-07:00"'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Local start and end times, 24-hour clock, in the recipient''s time zone; push and SMS wait until the end.';
	END IF;

	INSERT INTO notify.recipients AS r (external_id, email, phone, locale, timezone, attributes)
	VALUES (recipient, email, phone, locale, timezone, coalesce(attributes, '{}'))
	ON CONFLICT (external_id) DO UPDATE
		SET email = coalesce(EXCLUDED.email, r.email),
			phone = coalesce(EXCLUDED.phone, r.phone),
			locale = coalesce(EXCLUDED.locale, r.locale),
			timezone = coalesce(EXCLUDED.timezone, r.timezone),
			attributes = CASE WHEN notify_upsert_recipient.attributes IS NULL THEN r.attributes
							  ELSE r.attributes || EXCLUDED.attributes END,
			updated_at = now()
	RETURNING r.id INTO v_id;
	RETURN v_id;
END;
$$;

CREATE FUNCTION notify_register_device(recipient text, platform text, token text, app text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	v_recipient bigint;
	v_token text := token;
	v_sub jsonb;
	v_id bigint;
BEGIN
	v_recipient := notify._recipient_id(recipient);
	IF platform IS NULL OR platform NOT IN ('ios', 'android', 'web') THEN
		RAISE EXCEPTION 'unknown platform "%"', platform
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Platforms are ios (APNS), android (FCM) and web (Web Push).';
	END IF;
	IF token IS NULL OR token = '' THEN
		RAISE EXCEPTION 'device token is empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass the token the platform gave the app.';
	END IF;
	IF app IS NOT NULL AND NOT EXISTS (SELECT 1 FROM notify.providers p WHERE p.name = app) THEN
		RAISE EXCEPTION 'unknown provider "%" for app', app
			USING ERRCODE = 'undefined_object',
				  HINT = 'app names a provider instance; create it with notify_set_provider() first.';
	END IF;

	IF platform = 'ios' THEN
		IF token !~ '^[0-9A-Fa-f]{64}$' THEN
			RAISE EXCEPTION 'APNS device token must be 64 hexadecimal digits'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('Got %s characters.', length(token)),
					  HINT = 'Send the token as hex, e.g. from deviceToken.map { String(format: "%02x", $0) }.joined().';
		END IF;
		v_token := lower(token);
	ELSIF platform = 'android' THEN
		IF token !~ '^[A-Za-z0-9_:.-]+$' OR length(token) NOT BETWEEN 20 AND 4096 THEN
			RAISE EXCEPTION 'FCM registration token is malformed'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass the token from FirebaseMessaging.getInstance().getToken() unchanged.';
		END IF;
	ELSE
		BEGIN
			v_sub := token::jsonb;
		EXCEPTION WHEN others THEN
			RAISE EXCEPTION 'web push subscription is not valid JSON'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass JSON.stringify(pushSubscription) from the browser.';
		END;
		IF jsonb_typeof(v_sub) <> 'object'
		   OR jsonb_typeof(v_sub->'endpoint') IS DISTINCT FROM 'string'
		   OR (v_sub->>'endpoint') !~ '^https://[^/\s]+' THEN
			-- push services are https; anything else could aim the workers at internal URLs
			RAISE EXCEPTION 'web push subscription has no https endpoint URL'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass the whole PushSubscription: {"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}.';
		END IF;
		IF (v_sub #>> '{keys,p256dh}') IS NULL OR (v_sub #>> '{keys,auth}') IS NULL THEN
			RAISE EXCEPTION 'web push subscription is missing keys.p256dh or keys.auth'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Pass the whole PushSubscription: {"endpoint": "https://...", "keys": {"p256dh": "...", "auth": "..."}}.';
		END IF;
		IF (v_sub #>> '{keys,p256dh}') !~ '^[A-Za-z0-9_-]{86,88}=*$' OR (v_sub #>> '{keys,auth}') !~ '^[A-Za-z0-9_-]{21,24}=*$' THEN
			RAISE EXCEPTION 'web push subscription keys are malformed'
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = 'p256dh must be a base64url P-256 public key (65 bytes) and auth a base64url 16-byte secret.',
					  HINT = 'Pass the keys the browser returned, unchanged.';
		END IF;
		v_sub := jsonb_build_object('endpoint', v_sub->'endpoint',
									'keys', jsonb_build_object('p256dh', v_sub #> '{keys,p256dh}',
															   'auth', v_sub #> '{keys,auth}'));
		v_token := v_sub->>'endpoint';
	END IF;

	INSERT INTO notify.devices AS d (recipient_id, platform, token, subscription, app)
	VALUES (v_recipient, platform, v_token, v_sub, app)
	ON CONFLICT (platform, token) DO UPDATE
		SET recipient_id = EXCLUDED.recipient_id,
			subscription = EXCLUDED.subscription,
			app = EXCLUDED.app,
			active = true,
			last_error = NULL,
			deactivated_at = NULL,
			updated_at = now()
	RETURNING d.id INTO v_id;
	RETURN v_id;
END;
$$;

-- token: an APNS/FCM token, a subscription's endpoint, or the subscription JSON.
CREATE FUNCTION notify_unregister_device(token text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_token text := token;
BEGIN
	IF left(ltrim(token), 1) = '{' THEN
		BEGIN
			v_token := token::jsonb->>'endpoint';
		EXCEPTION WHEN others THEN
			v_token := token;
		END;
	END IF;
	UPDATE notify.devices d
	   SET active = false, deactivated_at = now(), last_error = 'unregistered', updated_at = now()
	 WHERE d.token IN (v_token, lower(v_token)) AND d.active;
	RETURN FOUND;
END;
$$;

CREATE FUNCTION notify_set_preference(recipient text, channel text, enabled boolean, category text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_recipient bigint;
BEGIN
	v_recipient := notify._recipient_id(recipient);
	PERFORM notify._check_channel(channel);
	IF enabled IS NULL THEN
		RAISE EXCEPTION 'enabled must be true or false'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'To forget a preference, set it to true (no row means enabled).';
	END IF;
	INSERT INTO notify.preferences AS p (recipient_id, channel, category, enabled)
	VALUES (v_recipient, channel, category, enabled)
	ON CONFLICT ON CONSTRAINT preferences_key DO UPDATE
		SET enabled = EXCLUDED.enabled, source = 'api', updated_at = now();
END;
$$;

/* ------------------------------------------------------------------------
 * Templates and providers API
 * ------------------------------------------------------------------------ */

CREATE FUNCTION notify_put_template(name text, channel text, content jsonb, locale text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_locale text := coalesce(locale, '');
	v_current record;
	v_version int;
BEGIN
	IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
		RAISE EXCEPTION 'invalid template name "%"', name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use letters, digits, "_", ".", ":" and "-", starting with a letter or digit (at most 128).';
	END IF;
	PERFORM notify._check_channel(channel);
	IF v_locale <> '' AND v_locale !~ '^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$' THEN
		RAISE EXCEPTION 'invalid locale "%"', locale
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a BCP 47 tag such as en or pt-BR, or NULL for the default.';
	END IF;
	PERFORM notify._check_template(content, channel, name);

	-- one writer at a time per template, so versions are dense
	PERFORM pg_advisory_xact_lock(hashtext('notify.template'), hashtext(name || '/' || channel || '/' || v_locale));
	SELECT t.version, t.content INTO v_current
	  FROM notify.templates t
	 WHERE t.name = notify_put_template.name AND t.channel = notify_put_template.channel AND t.locale = v_locale
	 ORDER BY t.version DESC LIMIT 1;
	IF FOUND AND v_current.content = content THEN
		RETURN v_current.version;	-- unchanged: no new version
	END IF;
	v_version := coalesce(v_current.version, 0) + 1;
	INSERT INTO notify.templates (name, channel, locale, version, content)
	VALUES (name, channel, v_locale, v_version, content);
	RETURN v_version;
END;
$$;

CREATE FUNCTION notify_set_provider(provider text, kind text, config jsonb, enabled boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- an error must not copy the statement, secrets and all, into the server log
SET log_min_error_statement = panic
AS $$
#variable_conflict use_column
BEGIN
	IF provider IS NULL OR provider !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
		RAISE EXCEPTION 'invalid provider name "%"', provider
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use lower-case letters, digits, "_" and "-", starting with a letter (at most 63).';
	END IF;
	IF kind IS NULL OR kind NOT IN ('apns', 'fcm', 'webpush', 'twilio', 'smtp', 'webhook') THEN
		RAISE EXCEPTION 'unknown provider kind "%"', kind
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kinds are apns, fcm, webpush, twilio, smtp and webhook.';
	END IF;
	IF config IS NULL OR jsonb_typeof(config) <> 'object' THEN
		RAISE EXCEPTION 'provider config must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'See the README for the keys each kind takes.';
	END IF;
	IF EXISTS (SELECT 1 FROM notify.providers p WHERE p.name = notify_set_provider.provider AND p.kind <> notify_set_provider.kind) THEN
		RAISE EXCEPTION 'provider "%" exists with another kind', provider
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Pick another name; a provider''s kind cannot change while deliveries may be queued for it.';
	END IF;
	PERFORM notify._check_provider_config(kind, config);

	INSERT INTO notify.providers AS p (name, kind, config, enabled)
	VALUES (provider, kind, config, coalesce(enabled, true))
	ON CONFLICT (name) DO UPDATE
		SET config = EXCLUDED.config, enabled = EXCLUDED.enabled, updated_at = now();
	PERFORM notify._providers_changed();
END;
$$;

/* ------------------------------------------------------------------------
 * Rendering and sending
 * ------------------------------------------------------------------------ */

/*
 * The newest version of each channel of a template, for a locale chain:
 * one row per channel, the most specific locale first.
 */
CREATE FUNCTION notify._pick_templates(p_template text, p_locales text[], p_channels text[])
RETURNS TABLE (channel text, locale text, version int, content jsonb)
LANGUAGE sql STABLE
AS $$
	SELECT DISTINCT ON (t.channel) t.channel, t.locale, t.version, t.content
	  FROM notify.templates t
	 WHERE t.name = p_template
	   AND t.locale = ANY (p_locales)
	   AND (p_channels IS NULL OR t.channel = ANY (p_channels))
	 ORDER BY t.channel, array_position(p_locales, t.locale), t.version DESC
$$;

CREATE FUNCTION notify_render(template text, channel text, params jsonb DEFAULT '{}', locale text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_t record;
BEGIN
	PERFORM notify._check_channel(channel);
	SELECT * INTO v_t FROM notify._pick_templates(template, notify._locale_chain(locale), ARRAY[channel]);
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown template "%" for channel %', template, channel
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with notify_put_template().';
	END IF;
	RETURN notify._render(v_t.content, channel, params, NULL, template);
END;
$$;

/*
 * The hot path of the product, in C (src/send.c): a few prepared
 * statements per send, templates, providers and frequency caps kept in
 * memory per session.
 *
 * Validates everything before writing anything; an idempotency key already
 * used returns the notification that has it.  Renders every channel of the
 * template (or of channels) that the recipient's locale chain finds:
 * exact, language, default.  Holds back per channel opt-outs (a category
 * row beats the channel row) and reached frequency caps: their rows are
 * 'suppressed' and their content is not kept.  Push and sms that are not
 * urgent (priority < 5, no send_at) wait for the end of the recipient's
 * quiet hours.  One outbox row per destination: every active device for
 * push, the phone for sms, the address for email, the recipient's
 * webhook_url (else the provider's endpoint) for webhook; a missing one is
 * a 'skipped' row.  The workers of the providers written to are woken at
 * commit when the notification is due now.
 */
CREATE FUNCTION notify_send(recipient text,
							template text,
							params jsonb DEFAULT '{}',
							channels text[] DEFAULT NULL,
							category text DEFAULT NULL,
							priority int DEFAULT 0,
							send_at timestamptz DEFAULT NULL,
							expires_at timestamptz DEFAULT NULL,
							idempotency_key text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'notify_send'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

/* ------------------------------------------------------------------------
 * Pacing and audiences: quiet hours, frequency caps, groups, approval,
 * engagement tracking
 * ------------------------------------------------------------------------ */

/*
 * When "at" falls in the quiet hours spec ('22:00-07:00', local to tz),
 * the moment they end; else NULL.
 */
CREATE FUNCTION notify._quiet_until(p_spec text, p_tz text, p_at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	v_local timestamp := p_at AT TIME ZONE p_tz;
	v_start time := split_part(p_spec, '-', 1)::time;
	v_end time := split_part(p_spec, '-', 2)::time;
	v_t time := v_local::time;
BEGIN
	IF v_start < v_end THEN
		IF v_t >= v_start AND v_t < v_end THEN
			RETURN (v_local::date + v_end) AT TIME ZONE p_tz;
		END IF;
	ELSIF v_t >= v_start THEN
		RETURN (v_local::date + 1 + v_end) AT TIME ZONE p_tz;
	ELSIF v_t < v_end THEN
		RETURN (v_local::date + v_end) AT TIME ZONE p_tz;
	END IF;
	RETURN NULL;
END;
$$;

CREATE FUNCTION notify_set_frequency_cap(channel text, max_count int, per interval, category text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	PERFORM notify._check_channel(channel);
	IF max_count IS NULL AND per IS NULL THEN
		DELETE FROM notify.frequency_caps c
		 WHERE c.channel = notify_set_frequency_cap.channel
		   AND c.category IS NOT DISTINCT FROM notify_set_frequency_cap.category;
		RETURN;
	END IF;
	IF max_count IS NULL OR max_count < 1 OR per IS NULL OR per <= interval '0' THEN
		RAISE EXCEPTION 'a frequency cap needs max_count >= 1 and a positive interval'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example notify_set_frequency_cap(''push'', 3, ''1 day'', category => ''marketing''); NULL, NULL removes it.';
	END IF;
	INSERT INTO notify.frequency_caps AS c (channel, category, max_count, per)
	VALUES (channel, category, max_count, per)
	ON CONFLICT ON CONSTRAINT frequency_caps_key DO UPDATE
		SET max_count = EXCLUDED.max_count, per = EXCLUDED.per;
END;
$$;

CREATE FUNCTION notify_group_add(group_name text, recipients text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_missing text;
	v_count integer;
BEGIN
	IF group_name IS NULL OR group_name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' THEN
		RAISE EXCEPTION 'invalid group name "%"', group_name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use letters, digits, "_", ".", ":" and "-", starting with a letter or digit.';
	END IF;
	SELECT min(x) INTO v_missing FROM unnest(recipients) x
	 WHERE NOT EXISTS (SELECT 1 FROM notify.recipients r WHERE r.external_id = x);
	IF v_missing IS NOT NULL THEN
		RAISE EXCEPTION 'unknown recipient "%"', v_missing
			USING ERRCODE = 'no_data_found',
				  HINT = 'Create recipients with notify_upsert_recipient() before adding them to a group.';
	END IF;
	INSERT INTO notify.groups (name) VALUES (group_name) ON CONFLICT DO NOTHING;
	INSERT INTO notify.group_members (group_name, recipient_id)
	SELECT notify_group_add.group_name, r.id FROM notify.recipients r WHERE r.external_id = ANY (recipients)
	ON CONFLICT DO NOTHING;
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;

CREATE FUNCTION notify_group_remove(group_name text, recipients text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	DELETE FROM notify.group_members m
	 USING notify.recipients r
	 WHERE m.group_name = notify_group_remove.group_name AND r.id = m.recipient_id
	   AND r.external_id = ANY (recipients);
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;

-- Send to every member of a bulk send (idempotent per member).
CREATE FUNCTION notify._dispatch_bulk(p_id bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	v_b notify.bulk_sends;
	v_count integer := 0;
	v_member record;
BEGIN
	SELECT * INTO v_b FROM notify.bulk_sends WHERE id = p_id;
	FOR v_member IN
		SELECT r.id, r.external_id FROM notify.group_members m JOIN notify.recipients r ON r.id = m.recipient_id
		 WHERE m.group_name = v_b.group_name ORDER BY r.id
	LOOP
		PERFORM @extschema@.notify_send(v_member.external_id, v_b.template, v_b.params, v_b.channels, v_b.category,
								   v_b.priority, v_b.send_at, v_b.expires_at,
								   'bulk-' || p_id || '-' || v_member.id);
		v_count := v_count + 1;
	END LOOP;
	UPDATE notify.bulk_sends SET status = 'sent', decided_at = coalesce(decided_at, now()) WHERE id = p_id;
	RETURN v_count;
END;
$$;

/*
 * Send a template to a whole group.  Above notify.approval_threshold
 * members (default 10000) nothing is sent until a notify_admin approves.
 */
CREATE FUNCTION notify_send_group(group_name text, template text, params jsonb DEFAULT '{}',
								  channels text[] DEFAULT NULL, category text DEFAULT NULL,
								  priority int DEFAULT 0, send_at timestamptz DEFAULT NULL,
								  expires_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_members integer;
	v_threshold integer := coalesce(nullif(current_setting('notify.approval_threshold', true), '')::integer, 10000);
	v_id bigint;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM notify.groups g WHERE g.name = notify_send_group.group_name) THEN
		RAISE EXCEPTION 'unknown group "%"', group_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it by adding members with notify_group_add().';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM notify.templates t WHERE t.name = notify_send_group.template) THEN
		RAISE EXCEPTION 'unknown template "%"', template
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with notify_put_template().';
	END IF;
	SELECT count(*) INTO v_members FROM notify.group_members m WHERE m.group_name = notify_send_group.group_name;
	INSERT INTO notify.bulk_sends (group_name, template, params, channels, category, priority, send_at,
								   expires_at, recipients, status)
	VALUES (group_name, template, coalesce(params, '{}'), channels, category, priority, send_at, expires_at,
			v_members, CASE WHEN v_members > v_threshold THEN 'pending_approval' ELSE 'sent' END)
	RETURNING id INTO v_id;
	IF v_members > v_threshold THEN
		RAISE NOTICE 'group "%" has % members, over notify.approval_threshold (%): bulk send % waits for approval',
			group_name, v_members, v_threshold, v_id
			USING HINT = format('A notify_admin approves with SELECT notify_approve(%s); or rejects with notify_reject(%s).', v_id, v_id);
	ELSE
		PERFORM notify._dispatch_bulk(v_id);
	END IF;
	RETURN v_id;
END;
$$;

CREATE FUNCTION notify_approve(bulk_id bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_status text;
BEGIN
	SELECT b.status INTO v_status FROM notify.bulk_sends b WHERE b.id = bulk_id FOR UPDATE;
	IF v_status IS NULL THEN
		RAISE EXCEPTION 'unknown bulk send %', bulk_id
			USING ERRCODE = 'no_data_found', HINT = 'See notify.bulk_sends.';
	END IF;
	IF v_status <> 'pending_approval' THEN
		RAISE EXCEPTION 'bulk send % is %, not waiting for approval', bulk_id, v_status
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'See notify.bulk_sends.';
	END IF;
	UPDATE notify.bulk_sends b SET decided_by = session_user, decided_at = now() WHERE b.id = bulk_id;
	RETURN notify._dispatch_bulk(bulk_id);
END;
$$;

CREATE FUNCTION notify_reject(bulk_id bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE notify.bulk_sends b SET status = 'rejected', decided_by = session_user, decided_at = now()
	 WHERE b.id = bulk_id AND b.status = 'pending_approval';
	IF NOT FOUND THEN
		RAISE EXCEPTION 'bulk send % is not waiting for approval', bulk_id
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'See notify.bulk_sends.';
	END IF;
END;
$$;

-- Engagement: the app's receipt, open pixel or click redirect reports it.
CREATE FUNCTION notify_track(delivery_id bigint, event text, at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF event IS NULL OR event NOT IN ('delivered', 'opened', 'clicked') THEN
		RAISE EXCEPTION 'unknown tracking event "%"', event
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Events are delivered, opened and clicked.';
	END IF;
	-- an open implies delivery, a click implies both; the first time of each is kept
	UPDATE notify.deliveries d
	   SET delivered_at = coalesce(d.delivered_at, at),
		   opened_at = CASE WHEN event IN ('opened', 'clicked') THEN coalesce(d.opened_at, at) ELSE d.opened_at END,
		   clicked_at = CASE WHEN event = 'clicked' THEN coalesce(d.clicked_at, at) ELSE d.clicked_at END
	 WHERE d.id = delivery_id AND d.status = 'sent';
	RETURN FOUND;
END;
$$;

/* ------------------------------------------------------------------------
 * Looking at it
 * ------------------------------------------------------------------------ */

CREATE FUNCTION notify_status(id bigint)
RETURNS TABLE (delivery_id bigint, channel text, provider text, destination text, status text,
			   attempts integer, last_error text, created_at timestamptz, sent_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT o.id, o.channel, o.provider, notify._redact_destination(o.channel, o.destination),
		   CASE WHEN o.status = 'inflight' AND o.lease_until > now() THEN 'inflight'
				WHEN o.status = 'retry' THEN 'retry'
				WHEN o.next_attempt_at > now() THEN 'scheduled'
				ELSE 'queued' END,
		   o.attempts, o.last_error, o.created_at, NULL::timestamptz
	  FROM notify.outbox o WHERE o.notification_id = notify_status.id
	UNION ALL
	SELECT d.id, d.channel, d.provider, notify._redact_destination(d.channel, d.destination),
		   d.status, d.attempts, d.last_error, d.created_at, d.sent_at
	  FROM notify.deliveries d WHERE d.notification_id = notify_status.id
	ORDER BY 1
$$;

-- Web Push destinations are whole subscriptions (with keys): show the endpoint only.
CREATE FUNCTION notify._redact_destination(p_channel text, p_destination text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
	SELECT CASE WHEN p_channel = 'push' AND left(p_destination, 1) = '{'
				THEN (p_destination::jsonb)->>'endpoint'
				WHEN p_channel = 'webhook' AND p_destination = ''
				THEN '(provider endpoint)'
				ELSE p_destination END
$$;

CREATE VIEW notify.provider_settings AS
	SELECT p.name, p.kind, p.enabled, p.paused, notify._mask_secrets(p.kind, p.config) AS config,
		   p.created_at, p.updated_at
	  FROM notify.providers p;
COMMENT ON VIEW notify.provider_settings IS 'providers with every secret masked';

/* ------------------------------------------------------------------------
 * Operations: queue health, delivery statistics, history, admin actions
 * ------------------------------------------------------------------------ */

-- Per provider and priority: what waits, what is in flight, what died, how
-- late the oldest ready row is, and what finished in the last minute/hour.
CREATE VIEW notify.queue_stats AS
WITH q AS (
	SELECT o.provider, o.priority,
		   count(*) FILTER (WHERE o.next_attempt_at <= now()
							  AND (o.status <> 'inflight' OR o.lease_until <= now())) AS ready,
		   count(*) FILTER (WHERE o.status = 'queued' AND o.next_attempt_at > now()) AS scheduled,
		   count(*) FILTER (WHERE o.status = 'inflight' AND o.lease_until > now()) AS in_flight,
		   count(*) FILTER (WHERE o.status = 'retry' AND o.next_attempt_at > now()) AS retrying,
		   min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at <= now()
										   AND (o.status <> 'inflight' OR o.lease_until <= now())) AS oldest_ready
	  FROM notify.outbox o
	 GROUP BY 1, 2),
h AS (
	SELECT d.provider, d.priority,
		   count(*) FILTER (WHERE d.status = 'dead') AS dead,
		   count(*) FILTER (WHERE d.status = 'sent' AND d.finished_at > now() - interval '1 minute') AS delivered_1m,
		   count(*) FILTER (WHERE d.status IN ('failed', 'dead', 'expired')
							  AND d.finished_at > now() - interval '1 minute') AS failed_1m,
		   count(*) FILTER (WHERE d.status = 'sent' AND d.finished_at > now() - interval '1 hour') AS delivered_1h,
		   count(*) FILTER (WHERE d.status IN ('failed', 'dead', 'expired')
							  AND d.finished_at > now() - interval '1 hour') AS failed_1h
	  FROM notify.deliveries d
	 WHERE d.provider IS NOT NULL
	   AND (d.finished_at > now() - interval '1 hour' OR d.status IN ('dead', 'failed'))
	 GROUP BY 1, 2)
SELECT coalesce(q.provider, h.provider) AS provider,
	   coalesce(q.priority, h.priority) AS priority,
	   coalesce(q.ready, 0) AS ready,
	   coalesce(q.scheduled, 0) AS scheduled,
	   coalesce(q.in_flight, 0) AS in_flight,
	   coalesce(q.retrying, 0) AS retrying,
	   coalesce(h.dead, 0) AS dead,
	   coalesce(now() - q.oldest_ready, interval '0') AS lag,
	   coalesce(h.delivered_1m, 0) AS delivered_1m,
	   coalesce(h.failed_1m, 0) AS failed_1m,
	   coalesce(h.delivered_1h, 0) AS delivered_1h,
	   coalesce(h.failed_1h, 0) AS failed_1h
  FROM q FULL JOIN h ON h.provider = q.provider AND h.priority = q.priority
 ORDER BY 1, 2 DESC;
COMMENT ON VIEW notify.queue_stats IS 'queue depth, lag and recent outcomes per provider and priority';

-- Success rate and commit-to-sent latency percentiles per provider over a window.
CREATE FUNCTION notify_delivery_stats("window" interval DEFAULT '5 minutes')
RETURNS TABLE (provider text, sent bigint, failed bigint, dead bigint, expired bigint,
			   success_rate numeric, p50_ms double precision, p95_ms double precision, p99_ms double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT d.provider,
		   count(*) FILTER (WHERE d.status = 'sent'),
		   count(*) FILTER (WHERE d.status = 'failed'),
		   count(*) FILTER (WHERE d.status = 'dead'),
		   count(*) FILTER (WHERE d.status = 'expired'),
		   round(100.0 * count(*) FILTER (WHERE d.status = 'sent')
				 / nullif(count(*) FILTER (WHERE d.status IN ('sent', 'failed', 'dead', 'expired')), 0), 2),
		   percentile_cont(0.50) WITHIN GROUP (ORDER BY l.ms) FILTER (WHERE d.status = 'sent'),
		   percentile_cont(0.95) WITHIN GROUP (ORDER BY l.ms) FILTER (WHERE d.status = 'sent'),
		   percentile_cont(0.99) WITHIN GROUP (ORDER BY l.ms) FILTER (WHERE d.status = 'sent')
	  FROM notify.deliveries d
	  JOIN notify.notifications n ON n.id = d.notification_id,
		   LATERAL (SELECT 1000 * extract(epoch FROM d.sent_at - greatest(d.created_at, n.send_at)) AS ms) l
	 WHERE d.finished_at > now() - "window" AND d.provider IS NOT NULL
	 GROUP BY d.provider
	 ORDER BY d.provider
$$;

CREATE VIEW notify.delivery_stats AS
	SELECT * FROM notify_delivery_stats(interval '5 minutes');
COMMENT ON VIEW notify.delivery_stats IS 'success rate and latency percentiles per provider over the last 5 minutes';

-- Every attempt of every delivery of a recipient's latest notifications.
CREATE FUNCTION notify_history(recipient text, "limit" int DEFAULT 50)
RETURNS TABLE (notification_id bigint, template text, delivery_id bigint, channel text, provider text,
			   destination text, attempt int, at timestamptz, outcome text, provider_status int, error text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_recipient bigint := notify._recipient_id(recipient);
BEGIN
	IF "limit" IS NULL OR "limit" < 1 THEN
		RAISE EXCEPTION 'limit must be at least 1'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'It counts notifications, newest first.';
	END IF;
	RETURN QUERY
	WITH n AS (
		SELECT x.id, x.template FROM notify.notifications x
		 WHERE x.recipient_id = v_recipient ORDER BY x.id DESC LIMIT "limit"),
	dl AS (
		SELECT n.id AS nid, n.template, d.id, d.channel, d.provider, d.destination, d.attempts,
			   d.finished_at AS at, d.status, d.provider_status, d.last_error
		  FROM n JOIN notify.deliveries d ON d.notification_id = n.id
		UNION ALL
		SELECT n.id, n.template, o.id, o.channel, o.provider, o.destination, o.attempts,
			   NULL, o.status, NULL, o.last_error
		  FROM n JOIN notify.outbox o ON o.notification_id = n.id)
	SELECT dl.nid, dl.template, dl.id, dl.channel, dl.provider,
		   notify._redact_destination(dl.channel, dl.destination),
		   a.attempt, a.at, a.outcome, a.provider_status, a.error
	  FROM dl JOIN notify.attempts a ON a.outbox_id = dl.id
	UNION ALL
	SELECT dl.nid, dl.template, dl.id, dl.channel, dl.provider,
		   notify._redact_destination(dl.channel, dl.destination),
		   dl.attempts, dl.at, dl.status, dl.provider_status, dl.last_error
	  FROM dl
	 WHERE dl.at IS NOT NULL OR dl.attempts = 0 OR dl.status = 'inflight'
	 ORDER BY 1 DESC, 3, 7, 8;
END;
$$;

/*
 * Requeue dead or failed deliveries: they go back to the outbox under the
 * same id, their earlier outcome kept in notify.attempts, with a fresh
 * budget of notify.max_attempts.
 */
CREATE FUNCTION notify._requeue(p_ids bigint[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	v_count integer;
	v_providers text[];
BEGIN
	WITH moved AS (
		DELETE FROM notify.deliveries d
		 WHERE d.id = ANY (p_ids) AND d.status IN ('dead', 'failed')
		   AND d.provider IS NOT NULL AND d.destination IS NOT NULL
		RETURNING d.*),
	kept AS (
		INSERT INTO notify.attempts (outbox_id, attempt, at, outcome, provider_status, error)
		SELECT m.id, m.attempts, m.finished_at, m.status, m.provider_status, m.last_error FROM moved m
		ON CONFLICT DO NOTHING),
	back AS (
		INSERT INTO notify.outbox (id, notification_id, recipient_id, channel, provider, destination, device_id,
								   priority, status, attempts, attempt_base, next_attempt_at, expires_at,
								   last_error, created_at)
		OVERRIDING SYSTEM VALUE
		SELECT m.id, m.notification_id, m.recipient_id, m.channel, m.provider, m.destination, m.device_id,
			   m.priority, 'queued', m.attempts, m.attempts, now(), n.expires_at,
			   'requeued after: ' || coalesce(m.last_error, m.status), m.created_at
		  FROM moved m JOIN notify.notifications n ON n.id = m.notification_id
		RETURNING provider)
	SELECT count(*), array_agg(DISTINCT provider) INTO v_count, v_providers FROM back;
	IF v_count > 0 THEN
		PERFORM notify._wake_on_commit(v_providers);
	END IF;
	RETURN v_count;
END;
$$;

CREATE FUNCTION notify_requeue(id bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_status text;
BEGIN
	SELECT d.status INTO v_status FROM notify.deliveries d WHERE d.id = notify_requeue.id;
	IF v_status IS NULL THEN
		RAISE EXCEPTION 'no finished delivery %', id
			USING ERRCODE = 'no_data_found',
				  HINT = 'Pass a delivery id from notify_status() or notify_history().';
	END IF;
	IF v_status NOT IN ('dead', 'failed') THEN
		RAISE EXCEPTION 'delivery % is %, only dead or failed deliveries can be requeued', id, v_status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Send a new notification instead.';
	END IF;
	RETURN notify._requeue(ARRAY[id]);
END;
$$;

CREATE FUNCTION notify_requeue(provider text, since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
							   status text DEFAULT 'dead')
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM notify.providers p WHERE p.name = notify_requeue.provider) THEN
		RAISE EXCEPTION 'unknown provider "%"', provider
			USING ERRCODE = 'undefined_object',
				  HINT = 'See notify.provider_settings for the configured providers.';
	END IF;
	IF status IS NULL OR status NOT IN ('dead', 'failed') THEN
		RAISE EXCEPTION 'status must be dead or failed'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Dead deliveries ran out of attempts; failed ones were refused by the provider.';
	END IF;
	RETURN notify._requeue(ARRAY(
		SELECT d.id FROM notify.deliveries d
		 WHERE d.provider = notify_requeue.provider AND d.status = notify_requeue.status
		   AND (since IS NULL OR d.finished_at >= since)
		   AND (until IS NULL OR d.finished_at < until)));
END;
$$;

-- Cancel what of a notification is not yet sent; rows in flight go on.
CREATE FUNCTION notify_cancel(id bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
	v_inflight integer;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM notify.notifications n WHERE n.id = notify_cancel.id) THEN
		RAISE EXCEPTION 'unknown notification %', id
			USING ERRCODE = 'no_data_found',
				  HINT = 'Pass the id notify_send() returned.';
	END IF;
	WITH c AS (
		DELETE FROM notify.outbox o
		 WHERE o.notification_id = notify_cancel.id
		   AND NOT (o.status = 'inflight' AND o.lease_until > now())
		RETURNING o.*),
	ins AS (
		INSERT INTO notify.deliveries (id, notification_id, recipient_id, channel, provider, destination, device_id,
									   priority, status, attempts, last_error, created_at)
		SELECT c.id, c.notification_id, c.recipient_id, c.channel, c.provider, c.destination, c.device_id,
			   c.priority, 'cancelled', c.attempts, 'cancelled by ' || session_user, c.created_at
		  FROM c
		RETURNING 1)
	SELECT count(*) INTO v_count FROM ins;
	SELECT count(*) INTO v_inflight FROM notify.outbox o WHERE o.notification_id = notify_cancel.id;
	IF v_inflight > 0 THEN
		RAISE NOTICE '% deliveries of notification % are being sent right now and were not cancelled', v_inflight, id;
	END IF;
	RETURN v_count;
END;
$$;

/*
 * Pause or resume a provider.  updated_at is left alone: it marks a
 * configuration change, which would make the workers rebuild their state
 * and drop their connections.  Workers read "paused" at every batch; the
 * idle ones are woken at commit.
 */
CREATE FUNCTION notify._set_paused(p_provider text, p_paused boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
	UPDATE notify.providers p SET paused = p_paused WHERE p.name = p_provider;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown provider "%"', p_provider
			USING ERRCODE = 'undefined_object',
				  HINT = 'See notify.provider_settings for the configured providers.';
	END IF;
	PERFORM notify._wake_on_commit(ARRAY[p_provider]);
END;
$$;

CREATE FUNCTION notify_pause(provider text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT notify._set_paused(provider, true) $$;

CREATE FUNCTION notify_resume(provider text)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT notify._set_paused(provider, false) $$;

CREATE FUNCTION notify_workers()
RETURNS TABLE (pid integer, database name, provider text, worker integer, state text,
			   started_at timestamptz, last_batch_at timestamptz, batches bigint,
			   delivered bigint, failed bigint, retried bigint, last_error text)
AS 'MODULE_PATHNAME', 'notify_workers'
LANGUAGE C VOLATILE;

/* ------------------------------------------------------------------------
 * Roles and privileges
 *
 * notify_sender: send, and manage recipients, devices and preferences.
 * notify_admin: everything an operator needs, and what a sender may do.
 * PUBLIC: nothing.  Nobody but the extension owner reads provider secrets.
 * ------------------------------------------------------------------------ */

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'notify_sender') THEN
		CREATE ROLE notify_sender NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'notify_admin') THEN
		CREATE ROLE notify_admin NOLOGIN;
	END IF;
END;
$$;
GRANT notify_sender TO notify_admin;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA notify FROM PUBLIC;
REVOKE ALL ON FUNCTION
	notify_send(text, text, jsonb, text[], text, int, timestamptz, timestamptz, text),
	notify_upsert_recipient(text, text, text, text, text, jsonb),
	notify_register_device(text, text, text, text),
	notify_unregister_device(text),
	notify_set_preference(text, text, boolean, text),
	notify_put_template(text, text, jsonb, text),
	notify_set_provider(text, text, jsonb, boolean),
	notify_render(text, text, jsonb, text),
	notify_status(bigint),
	notify_history(text, int),
	notify_delivery_stats(interval),
	notify_requeue(bigint),
	notify_requeue(text, timestamptz, timestamptz, text),
	notify_cancel(bigint),
	notify_pause(text),
	notify_resume(text),
	notify_workers(),
	notify_set_frequency_cap(text, int, interval, text),
	notify_group_add(text, text[]),
	notify_group_remove(text, text[]),
	notify_send_group(text, text, jsonb, text[], text, int, timestamptz, timestamptz),
	notify_approve(bigint),
	notify_reject(bigint),
	notify_track(bigint, text, timestamptz)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
	notify_send(text, text, jsonb, text[], text, int, timestamptz, timestamptz, text),
	notify_upsert_recipient(text, text, text, text, text, jsonb),
	notify_register_device(text, text, text, text),
	notify_unregister_device(text),
	notify_set_preference(text, text, boolean, text),
	notify_group_add(text, text[]),
	notify_group_remove(text, text[]),
	notify_send_group(text, text, jsonb, text[], text, int, timestamptz, timestamptz),
	notify_track(bigint, text, timestamptz)
TO notify_sender;

GRANT EXECUTE ON FUNCTION
	notify_put_template(text, text, jsonb, text),
	notify_set_provider(text, text, jsonb, boolean),
	notify_render(text, text, jsonb, text),
	notify_status(bigint),
	notify_history(text, int),
	notify_delivery_stats(interval),
	notify_requeue(bigint),
	notify_requeue(text, timestamptz, timestamptz, text),
	notify_cancel(bigint),
	notify_pause(text),
	notify_resume(text),
	notify_workers(),
	notify_set_frequency_cap(text, int, interval, text),
	notify_approve(bigint),
	notify_reject(bigint)
TO notify_admin;

GRANT USAGE ON SCHEMA notify TO notify_admin;
GRANT SELECT ON notify.queue_stats, notify.delivery_stats, notify.provider_settings TO notify_admin;
-- the views call these as their owner, but the planner checks EXECUTE for the caller
GRANT EXECUTE ON FUNCTION notify._mask_secrets(text, jsonb) TO notify_admin;

CREATE FUNCTION notify._extension_loaded_notice()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	IF NOT notify._workers_loaded() THEN
		RAISE WARNING 'notify is installed, but its delivery workers are not running'
			USING HINT = 'Add notify to shared_preload_libraries and restart PostgreSQL; until then notifications are queued, not sent.';
	END IF;
END;
$$;
SELECT notify._extension_loaded_notice();
