"""`allmende demo`: the whole data path on one machine, as a newcomer's first run.

A local coordinator on the embedded default (SQLite), a job from the bundled caption corpus
(uploaded over gRPC like any job), two volunteers (distinct keys, so each unit is computed
twice and compared), completion, and the pulled, verified dataset. `--kind filter-text`
runs on a bundled multilingual corpus; `--kind clip-filter` on bundled photographs, with a
CLIP the coordinator serves to the volunteers (images.py). In a terminal the first
volunteer runs in the volunteer's TUI (the second works in the background); press q once
the job is done to see the summary.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from allmende.api.client import ApiClient
from allmende.api.dataset import pull
from allmende.cli.common import EXIT_FAILED, EXIT_OK, CliError, err, out
from allmende.client.cli.volunteer_cmds import quiet_progress_bars
from allmende.client.engine import EngineConfig, Event, VolunteerEngine
from allmende.coordinator.cli.inputs import read_items
from allmende.coordinator.cli.job_cmds import upload_requests
from allmende.demo import images
from allmende.protocol.errors import InvalidArgument
from allmende.protocol.kinds import get_kind
from allmende.protocol.kinds.columns import VectorColumn
from allmende.v1 import allmende_pb2 as pb

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "demo-corpus.jsonl"
VOLUNTEERS = 2


@dataclass(frozen=True)
class DemoJob:
    """What the demo runs for a task kind: its bundled input, what the rows are, the keep
    rule it shows, and what each result is called in the summary."""

    corpus: Path
    items: str
    results: str
    rule: dict[str, str] = field(default_factory=dict)


DEMOS = {
    "embed-text": DemoJob(CORPUS, "captions", "embeddings"),
    "filter-text": DemoJob(
        DATA / "multilingual.jsonl",
        "texts in 14 languages",
        "language labels",
        {"keep_languages": "de,en,fr", "min_language_score": "0.5"},
    ),
    "clip-filter": DemoJob(
        images.IMAGES / "captions.tsv",
        "photographs with captions, half of them shuffled",
        "image and caption embeddings",
        {"min_similarity": "0.28", "max_punsafe": "0.5"},
    ),
}
IMAGE_KIND = "clip-filter"  # the kind whose demo runs on photographs and a served CLIP


def demo(args: argparse.Namespace) -> int:
    from allmende.coordinator.app import serve
    from allmende.coordinator.domain.trust import TrustPolicy
    from allmende.coordinator.home import CoordinatorHome

    quiet_progress_bars()  # the demo's volunteers load the model in this process
    root = Path(args.dir).resolve()
    kind = get_kind(args.kind)
    what = DEMOS[kind.name]
    with_images = kind.name == IMAGE_KIND
    if args.clip_model and not with_images:
        raise InvalidArgument("--clip-model", f"--kind {IMAGE_KIND} (the only demo with CLIP)")
    source = Path(args.input) if args.input else what.corpus
    items = images.pairs() if with_images and not args.input else read_items(source)
    # Checked (and the tiny CLIP built) before anything starts: a bad folder changes nothing.
    clip = (
        images.local_manifest(*images.model_folder(root, args.clip_model)) if with_images else None
    )
    home = CoordinatorHome(root / "coordinator")
    if not home.key_path.exists():
        home.init()
    out(f"Allmende demo in {root}")
    # The demo's two volunteers are the operator's own, on this machine: they vouch for
    # their results (`serve --trust-local`), as no volunteer has a record yet.
    with serve(home.root, "127.0.0.1:0", policy=TrustPolicy(trust_local=True)) as running:
        fp = running.coordinator.key.fingerprint
        out(f"1. coordinator on {running.address} (SQLite), fingerprint {fp[:16]}…")
        model = kind.default_model
        with ApiClient(running.address, admin_token=home.load_token()) as admin:
            if clip is not None:  # as `allmende model add` uploads it
                model = images.serve_model(admin, *clip)
            spec = pb.JobSpec(
                name=f"demo: {source.name}", kind=kind.name, model=model, rule=what.rule
            )
            created = admin.create_job(upload_requests(spec, source.name, items))
        job_id = created.job_id
        label = "items" if args.input else what.items
        out(
            f"2. {kind.name} job {job_id}: {created.items} {label} "
            f"({created.unique_items} unique) in {created.units} units, each computed by 2 "
            "volunteers"
        )
        fetch = ", fetched from the coordinator by each that lacks it" if clip is not None else ""
        out(f"3. {VOLUNTEERS} volunteers computing with {model} on the CPU{fetch} …")
        started = time.perf_counter()
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.headless
        if interactive:
            codes = _run_with_tui(running.address, fp, root)
        else:
            codes = _run_volunteers(running.address, fp, root)
        elapsed = time.perf_counter() - started
        if any(codes):
            raise CliError(f"a volunteer stopped with exit code {max(codes)}", EXIT_FAILED)
        with ApiClient(running.address) as client:
            job = _wait_complete(client, job_id)
            out_dir = root / f"dataset-{job_id}"
            report = pull(client, job_id, fp, out_dir)
    computed = created.unique_items * job.spec.redundancy
    out(
        f"4. job {job.state}: {job.units_accepted}/{job.units_total} units accepted by quorum, "
        f"lowest row agreement ({kind.agreement_measure()}) {job.min_agreement:.6f}"
    )
    out(f"5. dataset pulled and verified: {report.rows} rows, {report.shards} shard(s)")
    if what.rule:
        kept = _kept(out_dir)
        rule = ", ".join(f"{name} {value}" for name, value in what.rule.items())
        out(f"   keep: {kept} of {report.rows} rows pass the job's rule ({rule})")
    if clip is not None:
        images.explain(tiny=not args.clip_model)
    out("")
    out("summary")
    out(f"  rows            {report.rows}")
    out(
        f"  throughput      {created.items / elapsed:.0f} items/s end to end "
        f"({computed / elapsed:.0f} {what.results}/s computed incl. replicas)"
    )
    out(
        f"  agreement       every row agreed by 2 volunteers; lowest "
        f"{kind.agreement_measure()} {job.min_agreement:.6f}"
    )
    out(f"  files           {out_dir}")
    out(f"  fingerprint     {fp}")
    if clip is not None:
        out("")
        images.show_rows(out_dir)
    out("")
    out("Try it yourself:")
    shown = ", ".join(
        c.name + ("[1:3]" if isinstance(c, VectorColumn) else "") for c in kind.results
    )
    shown += ", keep" if kind.keep is not None else ""
    out(f"  duckdb -c \"SELECT id, text, {shown} FROM '{out_dir}/**/*.parquet' LIMIT 5\"")
    out(f"  python -c \"import pandas as pd; print(pd.read_parquet('{out_dir}'))\"")
    out(f"  less {out_dir}/_allmende/README.md    # the dataset card")
    out(f"  allmende dataset verify {out_dir} --fingerprint {fp}")
    return EXIT_OK


def _kept(folder: Path) -> int:
    """Rows of a pulled dataset whose `keep` is true."""
    import pyarrow.parquet as pq

    shards = [p for p in sorted(folder.rglob("*.parquet")) if "_allmende" not in p.parts]
    return sum(sum(pq.read_table(p, columns=["keep"])["keep"].to_pylist()) for p in shards)


def _config(address: str, fingerprint: str, root: Path, index: int) -> EngineConfig:
    return EngineConfig(
        coordinator=address,
        fingerprint=fingerprint,
        home=root / f"volunteer-{index + 1}",
        device="auto",
        exit_when_idle=True,
        display_name=f"demo-volunteer-{index + 1}",
        threads=1,
        give_up_after_s=60,
    )


def _run_with_tui(address: str, fingerprint: str, root: Path) -> list[int]:
    """Volunteer 1 in the TUI, the others headless in the background."""
    from allmende.client.probes import SystemProbe
    from allmende.client.settings import VolunteerSettings
    from allmende.client.tui.app import VolunteerApp

    background = [
        VolunteerEngine(_config(address, fingerprint, root, i)) for i in range(1, VOLUNTEERS)
    ]
    codes = [0] * VOLUNTEERS

    def run(index: int, engine: VolunteerEngine) -> None:
        codes[index] = engine.run()

    threads = [
        threading.Thread(target=run, args=(i + 1, engine), daemon=True)
        for i, engine in enumerate(background)
    ]
    for thread in threads:
        thread.start()
    first = _config(address, fingerprint, root, 0)
    settings = VolunteerSettings(
        coordinator=address,
        fingerprint=fingerprint,
        display_name=first.display_name,
        device=first.device,
        threads=first.threads or 0,
    )
    probe = SystemProbe()
    app = VolunteerApp(
        settings=settings,
        home=first.home,
        engine_factory=lambda config, on_event: VolunteerEngine(
            config, on_event=on_event, probe=probe
        ),
        probe=probe,
        engine_extra={"exit_when_idle": True, "give_up_after_s": first.give_up_after_s},
        first_run=False,
    )
    app.run()
    stopped = app.state.stopped
    if stopped is None or stopped.exit_code or stopped.reason != "no work left":
        for engine in background:
            engine.quit()
        code = stopped.exit_code if stopped is not None and stopped.exit_code else EXIT_FAILED
        raise CliError("the demo was stopped before its job was done", code)
    for thread in threads:
        thread.join()
    return codes


def _run_volunteers(address: str, fingerprint: str, root: Path) -> list[int]:
    codes = [0] * VOLUNTEERS
    lock = threading.Lock()
    progress = {"units": 0}

    def report(event: Event) -> None:
        if event.name == "result.submitted":
            with lock:
                progress["units"] += 1
                if progress["units"] % 4 == 0:
                    err(f"   … {progress['units']} results submitted")
        elif event.name in ("unit.refused", "retrying"):
            err(f"   {event.as_line()}")

    def run(index: int) -> None:
        config = _config(address, fingerprint, root, index)
        codes[index] = VolunteerEngine(config, on_event=report).run()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(VOLUNTEERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def _wait_complete(client: ApiClient, job_id: str, timeout_s: float = 120) -> pb.JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_job(job_id)
        if job.state in ("complete", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if job.state != "complete":
        reasons = "; ".join(f"{f.unit_id}: {f.reason}" for f in job.failed_units)
        raise CliError(f"job {job_id} ended {job.state}: {job.reason} {reasons}", EXIT_FAILED)
    return job
