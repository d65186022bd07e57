-- One row per step of an action: (action, event, host) is the key writers upsert on (INSERT ... ON CONFLICT),
-- in the same statement as the change they explain, with no lock on the action and no read first.
-- Rows an older version wrote twice under one key (a scheduler's event of each attempt) are merged into the
-- first: details joined in order, the last outcome kept.
UPDATE instance_action_events k
   SET details = m.details, result = m.result, finish_time = m.finish_time
  FROM (SELECT min(id) AS keep, string_agg(details, '; ' ORDER BY id) AS details,
               (array_agg(result ORDER BY id DESC))[1] AS result, max(finish_time) AS finish_time
          FROM instance_action_events GROUP BY action_id, event, host HAVING count(*) > 1) m
 WHERE k.id = m.keep;
DELETE FROM instance_action_events e
 USING instance_action_events k
 WHERE k.action_id = e.action_id AND k.event = e.event AND k.host IS NOT DISTINCT FROM e.host AND k.id < e.id;

CREATE UNIQUE INDEX instance_action_events_key ON instance_action_events (action_id, event, host) NULLS NOT DISTINCT;
DROP INDEX instance_action_events_action_idx;  -- the key's index serves lookups by action
