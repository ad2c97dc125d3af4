"""Replica slots: `units.busy`, kept by triggers, and the indexes that make leasing O(1).

Leasing used to count, for every open unit in order, its active leases and counted results,
which costs as many lookups as there are units in flight. Now each unit carries `busy`
(leases in state 'active' plus results not 'invalid'); triggers on leases and results keep
it, so every writer (the data path, job control, bans) stays consistent without knowing it.
`ix_units_free` lists open units with a free slot; `ix_leases_due` finds expired leases, which
leasing now sweeps to state 'expired'.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FREE = "state = 'open' AND busy < target"
_LIVE = "state = 'active'"

# (table, the condition under which a row takes a slot)
_COUNTED = (("leases", "{row}.state = 'active'"), ("results", "{row}.state <> 'invalid'"))

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER tr_{table}_busy_insert AFTER INSERT ON {table} WHEN {new}
BEGIN UPDATE units SET busy = busy + 1 WHERE unit_id = NEW.unit_id; END""",
    """CREATE TRIGGER tr_{table}_busy_update AFTER UPDATE OF state ON {table}
WHEN ({old}) <> ({new})
BEGIN
  UPDATE units SET busy = busy + (CASE WHEN {new} THEN 1 ELSE -1 END)
  WHERE unit_id = NEW.unit_id;
END""",
    """CREATE TRIGGER tr_{table}_busy_delete AFTER DELETE ON {table} WHEN {old}
BEGIN UPDATE units SET busy = busy - 1 WHERE unit_id = OLD.unit_id; END""",
)

# OLD is NULL on INSERT and NEW on DELETE, hence the nested IFs.
_POSTGRES_TRIGGER = """
CREATE FUNCTION allmende_{table}_busy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  delta integer := 0;
  unit varchar;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    unit := OLD.unit_id;
    IF {old} THEN delta := delta - 1; END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    unit := NEW.unit_id;
    IF {new} THEN delta := delta + 1; END IF;
  END IF;
  IF delta <> 0 THEN
    UPDATE units SET busy = busy + delta WHERE unit_id = unit;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER tr_{table}_busy AFTER INSERT OR UPDATE OF state OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION allmende_{table}_busy();
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column("units", sa.Column("busy", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE units SET busy ="
        " (SELECT count(*) FROM leases l WHERE l.unit_id = units.unit_id"
        "  AND l.state = 'active')"
        " + (SELECT count(*) FROM results r WHERE r.unit_id = units.unit_id"
        "  AND r.state <> 'invalid')"
    )
    op.create_index(
        "ix_units_free",
        "units",
        ["job_id", "seq"],
        sqlite_where=sa.text(_FREE),
        postgresql_where=sa.text(_FREE),
    )
    op.create_index(
        "ix_leases_due",
        "leases",
        ["deadline_ms"],
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )
    for table, condition in _COUNTED:
        old, new = condition.format(row="OLD"), condition.format(row="NEW")
        if dialect == "postgresql":
            op.execute(_POSTGRES_TRIGGER.format(table=table, old=old, new=new))
        else:
            for trigger in _SQLITE_TRIGGERS:
                op.execute(trigger.format(table=table, old=old, new=new))
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, _ in _COUNTED:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER tr_{table}_busy ON {table}")
            op.execute(f"DROP FUNCTION allmende_{table}_busy()")
        else:
            for kind in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER tr_{table}_busy_{kind}")
    op.drop_index("ix_leases_due", table_name="leases")
    op.drop_index("ix_units_free", table_name="units")
    with op.batch_alter_table("units") as batch:
        batch.drop_column("busy")
    op.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
