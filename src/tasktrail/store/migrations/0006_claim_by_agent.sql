-- tasktrail schema 6: the start queue of one agent, in start order.
-- A worker claims the tasks of the agents it has runners for. With only `tasks_queue`
-- (every agent's pending tasks in start order) SQLite chose `tasks_by_agent` and sorted every
-- pending task of those agents to take the first few: a claim cost grew with the backlog.
-- With this index each agent's queue is read in order and the read stops after the page.
CREATE INDEX tasks_queue_by_agent ON tasks (agent, priority DESC, created_at)
    WHERE state = 'pending';
