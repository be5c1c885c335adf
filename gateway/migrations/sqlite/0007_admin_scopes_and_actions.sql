-- Admin keys may be scoped to some agents (a JSON array of agent ids);
-- NULL means every agent.
ALTER TABLE admin_keys ADD COLUMN agents TEXT;

-- Every admin action (admin key issued or revoked, task started or ended
-- through the admin API) with who did it and when. `actor` is the admin
-- key id for the admin API, `cli:USER` for the command line.
CREATE TABLE admin_actions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    agent_id  TEXT,
    detail    TEXT
);
