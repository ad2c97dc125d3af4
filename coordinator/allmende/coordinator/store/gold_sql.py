"""Gold rows in the SQL store: the pool of rows with known answers, read and filled.

A mixin of `SqlStore` (see sql.py). Rows come from the coordinator (`add_gold`) or from the
quorum of a decided unit (kept by `TrustQueries._settle`, trust_sql.py, in the transaction
that decides it); quarantine drops those of the units it reopens (trust_sql.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, func, select

from allmende.coordinator.store import schema as t
from allmende.coordinator.store.records import GoldInput, GoldRow, gold_image
from allmende.coordinator.store.sql_base import SqlBase


class GoldQueries(SqlBase):
    def gold_rows(self, job_ids: Sequence[str], per_job: int) -> list[GoldRow]:
        """Up to `per_job` gold rows for each job, newest first, drawn from every job of
        the same model (task kind, weights, dims and result dtype): a new job has gold rows
        from its first lease when earlier jobs of its model left some. Each row comes back
        under the job whose pool it serves (`GoldRow.job_id`), once per such job."""
        g, src, want = t.gold, t.jobs.alias("src"), t.jobs.alias("want")
        same_model = and_(
            src.c.kind == want.c.kind,
            src.c.model_sha256 == want.c.model_sha256,
            src.c.dims == want.c.dims,
            src.c.result_dtype == want.c.result_dtype,
        )
        out: list[GoldRow] = []
        with self._read() as conn:
            for job_id in job_ids:
                rows = conn.execute(
                    select(g.c.gold_id, g.c.text, g.c.answer, g.c.unit_id, g.c.image)
                    .select_from(g.join(src, src.c.job_id == g.c.job_id).join(want, same_model))
                    .where(want.c.job_id == job_id)
                    .order_by(g.c.gold_id.desc())
                    .limit(per_job)
                ).all()
                out.extend(GoldRow(row[0], job_id, row[1], row[2], row[3], row[4]) for row in rows)
        return out

    def gold_sources_leased(self, volunteer_id: str) -> set[str]:
        """The units gold rows were taken from that this volunteer leased: it saw their
        texts as ordinary rows, so they must never reach it as gold rows."""
        g, le = t.gold, t.leases
        with self._read() as conn:
            return set(
                conn.execute(
                    select(g.c.unit_id)
                    .distinct()
                    .select_from(g.join(le, le.c.unit_id == g.c.unit_id))
                    .where(le.c.volunteer_id == volunteer_id, g.c.unit_id != "")
                ).scalars()
            )

    def gold_by_ids(self, gold_ids: Sequence[int]) -> list[GoldRow]:
        g = t.gold
        if not gold_ids:
            return []
        with self._read() as conn:
            rows = conn.execute(
                select(g.c.gold_id, g.c.job_id, g.c.text, g.c.answer, g.c.unit_id, g.c.image).where(
                    g.c.gold_id.in_(list(gold_ids))
                )
            ).all()
        return [GoldRow(*row) for row in rows]

    def add_gold(
        self,
        job_id: str,
        rows: Sequence[GoldInput],
        source: str,
        now_ms: int,
        unit_ids: Sequence[str] = (),
    ) -> None:
        """`rows`: (text, answer[, image]). `unit_ids`: the unit of the job each row's text
        is in ('' or none: none)."""
        units = list(unit_ids) + [""] * (len(rows) - len(unit_ids))
        with self._tx() as conn:
            conn.execute(
                t.gold.insert(),
                [
                    {
                        "job_id": job_id,
                        "text": row[0],
                        "answer": row[1],
                        "image": gold_image(row),
                        "source": source,
                        "unit_id": unit_id,
                        "created_ms": now_ms,
                    }
                    for row, unit_id in zip(rows, units, strict=True)
                ],
            )

    def gold_count(self, job_id: str) -> int:
        g = t.gold
        with self._read() as conn:
            return int(conn.execute(select(func.count()).where(g.c.job_id == job_id)).scalar_one())
