-- One notify_send per transaction (pgbench -f; autocommit).
-- :nrec is set by bench.pl with -D (the number of bench recipients).
\set r random(1, :nrec)
SELECT notify_send('user' || :r::int, 'bench', jsonb_build_object('n', :r::int));
