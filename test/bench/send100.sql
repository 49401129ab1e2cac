-- 100 notify_send calls in one transaction (one statement).
\set r random(1, :nrec)
SELECT count(notify_send('user' || ((:r::int + i) % :nrec::int + 1), 'bench', jsonb_build_object('n', i)))
  FROM generate_series(1, 100) i;
