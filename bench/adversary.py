"""Adversary simulation under the default trust policy: fabricated rows published, cheaters
caught, honest false positives, and the verification overhead of plain quorum 2 and of
adaptive replication.

    python bench/adversary.py [--cheater-items 2000] [--items 4000] [--warmup 2000]
                              [--unit-size 32] [--honest 4] [--adaptive-after 10]
                              [--model real|hash]

A real coordinator in this process (`serve()` on port 0, SQLite, a fresh data folder per
run) and simulated volunteers that speak the real protocol over gRPC, each with its own key,
driven round-robin from one thread: tests/integration/adversary.py, shared with the
integration test (tests/integration/test_adversary.py). Honest volunteers run the real
all-MiniLM-L6-v2 on unique STS-B sentences (`--model hash`: a hash of each text instead, to
check the protocol quickly); the coordinator's gold computer runs the same model.

Every run uses the policy `coordinator serve` has by default (no --trust-local): a unit is
accepted only with a result from a proven volunteer (a record of valid results, or gold rows
passed). A fresh coordinator with neither gold rows nor proven volunteers publishes nothing,
so each run starts one of two documented ways: "coordinator gold" (`serve --gold-compute`,
every volunteer new) or "history": the operator's own volunteers (the honest ones) first
compute a warm-up job while the coordinator trusts loopback (`--trust-local`), then it runs
on with the default policy; the honest volunteers then have a record and the model has gold
rows from that job (the cross-job pool), the cheaters are new.

1. Cheaters. One job (--cheater-items), honest volunteers plus one cheater of each kind:
   random vectors, honest rows plus noise (cosine 0.99), another model (the first three
   words of each text), a replayed old result, a copied result, a forged signature, and a
   10 % cheater that turns to random rows once it is trusted. Run twice: with coordinator
   gold, and with history (gold rows only from units proven quorums accepted). Printed per
   cheater: caught or not, units it leased until quarantine (of them
   dishonest), the reason; then the honest volunteers quarantined (false positives), the
   fabricated rows published (rows of accepted units whose published values are not the
   honest model's), gold rows with a wrong answer, and dataset rows unlike the honest
   model's. Goal: all caught, all zero.
2. A colluding pair that compares its two copies of a unit to find the gold rows (texts
   only one of them got: each lease's own gold row and decoy) and agrees on a lie for the
   rest. Replicas of a unit share their other gold rows, so the lie covers them too.
   Printed as in 1.; goal: no fabricated row published, no honest volunteer quarantined.
   (Under the old default, quorum-only gold, this pair got 32 wrong rows shipped.)
3. Verification overhead = compute per accepted item = (rows volunteers computed, gold rows
   and refused results included, plus gold rows the coordinator computed) / unique items.
   Baseline: plain quorum 2 (TrustPolicy(adaptive=False)), just over 2.0. Adaptive
   replication: a job (--items) created after a warm-up job (--warmup) the same honest
   volunteers completed (by the operator's trust under "history"), so they start it
   trusted (a unit is then replicated with chance max(1 / consecutive valid results,
   5 %)). Goal: <= 1.15, printed also as a ratio to the baseline of the same run. Every
   figure is a count, not a timing.

Exits non-zero when a goal is missed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from corpus import ROOT, stsb_texts

sys.path.insert(0, str(ROOT))  # tests.integration.adversary: the shared simulation

from allmende.coordinator.domain.trust import TrustPolicy
from tests.integration.adversary import (
    JobRun,
    Model,
    Volunteer,
    cast,
    collusion_cast,
    dataset_rows,
    hash_model,
    poisoned_gold,
    published_wrong,
    real_model,
    row_cosines,
    simulation,
)

GOAL = 1.15
TAU = 0.999  # the job default


def default_policy(**changes: object) -> TrustPolicy:
    """The policy of `coordinator serve` without trust flags (whatever ALLMENDE_TRUST_LOCAL
    says in this shell)."""
    return TrustPolicy(trust_local=False, **changes)  # type: ignore[arg-type]


def cheaters_run(
    root: Path,
    model: Model,
    texts: list[str],
    args: argparse.Namespace,
    gold: bool,
    volunteers: list[Volunteer],
    history: list[str],
    idle_s: float = 30.0,
) -> tuple[JobRun, int, int, int]:
    """One job with these volunteers (after the operator's warm-up job over `history`,
    when not `gold`); returns the run (state 'stalled' if it stopped getting anywhere), the
    fabricated rows published, the gold rows whose answer is wrong, and the dataset rows
    that differ from the honest model's."""
    policy = default_policy(adaptive_after=args.adaptive_after)
    with simulation(root, model, volunteers, policy, gold=gold) as sim:
        if not gold:
            sim.operator_warm_up(history, unit_size=args.unit_size, redundancy=2)
        job_id = sim.create_job(texts, unit_size=args.unit_size, redundancy=2)
        run = sim.run(job_id, idle_s=idle_s, stall_ok=True)
        db = root / "coordinator.db"
        fabricated = published_wrong(db, job_id, model, TAU)
        poisoned = poisoned_gold(db, job_id, model, TAU)
        wrong = 0
        if run.state == "complete":
            rows_texts, embeddings = dataset_rows(root / "datasets" / job_id)
            wrong = int((row_cosines(embeddings, model(rows_texts)) < TAU).sum())
    return run, fabricated, poisoned, wrong


def overhead_run(
    root: Path,
    model: Model,
    texts: list[str],
    warmup: list[str],
    args: argparse.Namespace,
    adaptive: bool,
    gold: bool,
) -> JobRun:
    policy = default_policy(adaptive=adaptive, adaptive_after=args.adaptive_after)
    with simulation(root, model, cast(args.honest, ()), policy, gold=gold) as sim:
        if not gold:  # plain quorum too: a fresh coordinator needs proven volunteers
            sim.operator_warm_up(warmup, unit_size=args.unit_size)
        elif warmup:
            sim.run(sim.create_job(warmup, unit_size=args.unit_size))
        return sim.run(sim.create_job(texts, unit_size=args.unit_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cheater-items", type=int, default=2000, help="items of 1. and 2.")
    parser.add_argument("--items", type=int, default=4000, help="items of the measured job")
    parser.add_argument("--warmup", type=int, default=2000, help="items of the warm-up job")
    parser.add_argument("--unit-size", type=int, default=32)
    parser.add_argument("--honest", type=int, default=4, help="honest volunteers")
    parser.add_argument("--adaptive-after", type=int, default=TrustPolicy().adaptive_after)
    parser.add_argument("--model", choices=("real", "hash"), default="real")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    started = time.perf_counter()
    model = real_model() if args.model == "real" else hash_model()
    texts = stsb_texts(args.items + args.warmup)
    measured, warmup = texts[: args.items], texts[args.items :]
    sample = measured[: args.cheater_items]
    history = warmup[: max(args.cheater_items // 2, 1)]
    failures: list[str] = []

    print(
        f"unique STS-B sentences: {args.cheater_items} per job in 1. and 2., {args.warmup} "
        f"then {args.items} in 3.; unit size {args.unit_size}, "
        f"{args.honest} honest volunteers, model {args.model}, redundancy 2, tau {TAU}, "
        f"trust after {args.adaptive_after} consecutive valid results"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The 10 % cheater first cheats once it could go out alone and its quorums be gold.
        trusted = max(args.adaptive_after, TrustPolicy().gold_streak)
        casts = {gold: cast(args.honest, trusted_after=trusted) for gold in (1, 0)}
        runs = {
            gold: cheaters_run(
                Path(tmp) / f"cheaters-{gold}",
                model,
                sample,
                args,
                bool(gold),
                casts[gold],
                history,
            )
            for gold in (1, 0)
        }
        print("\n1. Cheaters: units each leased until quarantined (dishonest units among them)")
        print(f"{'cheater':<28} {'coordinator gold rows':<34} {'history (operator warm-up)':<34}")
        by_kind = {gold: [v for v in casts[gold] if not v.honest] for gold in (1, 0)}
        for with_gold, without in zip(by_kind[1], by_kind[0], strict=True):
            cells = []
            for v in (with_gold, without):
                if v.quarantined:
                    cells.append(
                        f"caught after {v.caught_after:>2} ({v.dishonest_when_caught})"
                        f" {short(v.reason)}"
                    )
                else:
                    cells.append(f"NOT CAUGHT ({v.dishonest} dishonest of {v.units})")
                    failures.append(f"{v.kind} not caught")
            print(f"{with_gold.kind:<28} {cells[0]:<34} {cells[1]:<34}")
        for gold in (1, 0):
            run, fabricated, poisoned, wrong = runs[gold]
            honest = [v for v in casts[gold] if v.honest]
            false_positives = sum(v.quarantined for v in honest)
            label = "coordinator gold" if gold else "history"
            print(
                f"{label}: job {run.state}; fabricated rows published {fabricated}; honest "
                f"volunteers quarantined {false_positives} of {len(honest)}; wrong gold rows "
                f"{poisoned}; wrong dataset rows {wrong}; compute per accepted item "
                f"{run.overhead:.3f}"
            )
            if run.state != "complete" or false_positives or fabricated or poisoned or wrong:
                failures.append(f"{label}: a cheater's rows or a false positive")

        print("\n2. A colluding pair that compares its copies of each unit it holds twice")
        for gold in (1, 0):
            pair_cast = collusion_cast(args.honest)
            run, fabricated, poisoned, wrong = cheaters_run(
                Path(tmp) / f"collusion-{gold}",
                model,
                sample,
                args,
                bool(gold),
                pair_cast,
                history,
                5,
            )
            pair = [v for v in pair_cast if not v.honest]
            honest = [v for v in pair_cast if v.honest]
            false_positives = sum(v.quarantined for v in honest)
            label = "coordinator gold" if gold else "history"
            print(
                f"{label}: job {run.state}; fabricated rows published {fabricated}; the pair "
                f"lied on {sum(v.dishonest for v in pair)} unit answer(s), "
                f"{sum(v.quarantined for v in pair)} of 2 quarantined; honest volunteers "
                f"quarantined {false_positives} of {len(honest)}; wrong gold rows {poisoned}; "
                f"wrong dataset rows {wrong}"
            )
            if run.state != "complete" or fabricated or false_positives or poisoned or wrong:
                failures.append(f"colluding pair, {label}: not caught, or its rows shipped")

        print("\n3. Verification overhead: compute per accepted item (honest volunteers only)")
        print(f"{'':<44} {'coordinator gold':>17} {'history':>17}")
        figures: dict[str, dict[int, JobRun]] = {"plain": {}, "adaptive": {}}
        for gold in (1, 0):
            figures["plain"][gold] = overhead_run(
                Path(tmp) / f"plain-{gold}",
                model,
                measured,
                [] if gold else warmup,
                args,
                False,
                bool(gold),
            )
            figures["adaptive"][gold] = overhead_run(
                Path(tmp) / f"adaptive-{gold}", model, measured, warmup, args, True, bool(gold)
            )
        rows = (
            ("plain quorum 2 (baseline)", "plain"),
            ("adaptive replication, after warm-up", "adaptive"),
        )
        for label, key in rows:
            cells = [f"{figures[key][g].overhead:17.3f}" for g in (1, 0)]
            print(f"{label:<44} {cells[0]} {cells[1]}")
        ratios = [figures["adaptive"][g].overhead / figures["plain"][g].overhead for g in (1, 0)]
        print(f"{'adaptive / baseline':<44} {ratios[0]:17.3f} {ratios[1]:17.3f}")
        for gold in (1, 0):
            run = figures["adaptive"][gold]
            detail = (
                f"{run.volunteer_rows} rows by volunteers + {run.coordinator_rows} by the "
                f"coordinator for {run.unique_items} items"
            )
            verdict = "PASS" if run.overhead <= GOAL else "FAIL"
            label = "coordinator gold" if gold else "history"
            print(f"adaptive, {label}: {run.overhead:.3f} (goal <= {GOAL}) {verdict}; {detail}")
            if run.overhead > GOAL:
                failures.append(f"adaptive overhead {run.overhead:.3f} > {GOAL} ({label})")

    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if failures:
        print("FAIL: " + "; ".join(failures))
        sys.exit(1)
    print(
        "PASS: no fabricated row published, every cheater caught, no false positive, "
        f"adaptive overhead <= {GOAL}"
    )


def short(reason: str) -> str:
    if "gold" in reason:
        return "gold miss"
    if "refused" in reason:
        return "3 faults"
    if "outvoted" in reason:
        return "outvoted"
    return reason[:20]


if __name__ == "__main__":
    main()
