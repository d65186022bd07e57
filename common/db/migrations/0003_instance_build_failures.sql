-- The cause chain of a build: one entry per failed attempt ({host, step, reason, attempt, at}).
ALTER TABLE instances ADD COLUMN build_failures jsonb NOT NULL DEFAULT '[]';
