-- tasktrail schema 4: indexes for the dashboard (`tasktrail ui`): one agent's tasks newest
-- first, a page at a time, and the tasks that finished recently.
-- The projection's upsert never changes created_at or agent, so the first is written once
-- per task, when it is created. The second holds finished tasks only: a task enters it
-- once, when it finishes (nothing changes a finished task afterwards).

-- One agent's tasks, newest first; keyset paging on (created_at, rowid): every index ends
-- with the rowid. (All tasks newest first use tasks_by_created of migration 3.)
CREATE INDEX tasks_by_agent_created ON tasks (agent, created_at);

-- Finished tasks by the time they finished (a finished task's updated_at).
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
