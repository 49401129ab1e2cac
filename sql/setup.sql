--
-- setup: install the extension; it must work without shared_preload_libraries
-- (it says so), with its functions reachable on the default search_path.
--
CREATE EXTENSION notify;
SHOW search_path;
SELECT n.nspname AS schema, count(*) AS functions
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.proname LIKE 'notify\_%' AND n.nspname = 'public'
 GROUP BY 1;
-- every API function pins its search_path and runs as the owner
SELECT p.proname, p.prosecdef, p.proconfig
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.proname LIKE 'notify\_%'
 ORDER BY 1;
-- PUBLIC can read none of the tables
SELECT c.relname, has_table_privilege('public', c.oid, 'SELECT') AS public_select
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'notify' AND c.relkind IN ('r', 'v')
 ORDER BY 1;
