-- The policy decision behind each record (JSON: verdict, code, the
-- policies that matched, the approval route); NULL for records written
-- before policies existed and for refusals decided before policy.
ALTER TABLE decisions ADD COLUMN policy TEXT;

-- How much of each task budget is spent: `calls` (a count) or
-- `sum(ARG)` (in units of 1/10,000 of the argument). Checked and added in
-- one statement, so concurrent calls cannot both squeeze under a budget.
CREATE TABLE task_budgets (
    task_id  TEXT NOT NULL,
    budget   TEXT NOT NULL,
    used     INTEGER NOT NULL,
    PRIMARY KEY (task_id, budget)
);
