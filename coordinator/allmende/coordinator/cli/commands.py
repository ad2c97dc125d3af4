"""The operator's command groups: `allmende coordinator ...`, `allmende job ...`,
`allmende model ...` and `allmende volunteers ...`. Only argparse here: each handler is named
by its dotted path and imported when it runs, so `allmende --help` imports none of the
coordinator's dependencies."""

from __future__ import annotations

import argparse
import os

from allmende.cli.flags import (
    address,
    admin_flags,
    fraction,
    non_negative,
    positive,
    reader_flag,
    unit_interval,
)
from allmende.cli.logs import add_log_flags
from allmende.coordinator.cli.limit_flags import add_limit_flags
from allmende.coordinator.cli.rule_flags import add_rule_flags
from allmende.protocol.kinds import DEFAULT_KIND, KINDS


def db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("ALLMENDE_DB") or None,
        metavar="URL",
        help="the database: sqlite:///PATH, or postgresql://USER@HOST/DB to let several "
        "coordinators share one (default: coordinator.db in --data) [ALLMENDE_DB]",
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    coordinator = sub.add_parser("coordinator", help="run and manage a coordinator")
    csub = coordinator.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = csub.add_parser("init", help="create the signing key, admin token and database")
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    db_flag(p)
    p.add_argument("--tls-cert", help="use this PEM certificate instead of a self-signed one")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    p.add_argument(
        "--tls-name",
        action="append",
        default=[],
        help="a host name or address to put in the self-signed certificate",
    )
    p.set_defaults(handler="allmende.coordinator.cli.coordinator_cmds:init")
    p = csub.add_parser("serve", help="serve volunteers, admins and researchers over gRPC")
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    db_flag(p)
    p.add_argument(
        "--listen",
        type=address,
        default="127.0.0.1:50051",
        help="HOST:PORT to listen on (default 127.0.0.1:50051; port 0 picks one)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve TLS on a loopback address too (always on for other addresses)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext on a non-loopback address (exposes the admin token)",
    )
    p.add_argument(
        "--metrics",
        type=address,
        help="serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:9464)",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, wait this long for results of leased units (default 10)",
    )
    p.add_argument(
        "--private",
        action="store_true",
        help="researcher calls (job status/list, dataset pull) need reader.token from --data "
        "(made on first use) or the admin token; open by default",
    )
    trust = p.add_argument_group("trust (see README: Trust)")
    trust.add_argument(
        "--gold-compute",
        action="store_true",
        help="compute each new job's first gold rows here with the model (needs torch); "
        "otherwise gold rows come from units that distinct volunteers agreed on",
    )
    trust.add_argument(
        "--daily-quota",
        type=positive,
        default=200,
        help="units a new volunteer may lease per UTC day (default 200)",
    )
    trust.add_argument(
        "--quota-per-valid",
        type=non_negative,
        default=2,
        help="more units per day for each validated result (default 2)",
    )
    trust.add_argument(
        "--adaptive-after",
        type=positive,
        default=10,
        help="consecutive valid results before a volunteer's units may go unreplicated "
        "(default 10)",
    )
    trust.add_argument(
        "--replication-floor",
        type=unit_interval,
        default=0.05,
        help="the lowest chance a trusted volunteer's unit is still replicated (default 0.05)",
    )
    trust.add_argument(
        "--no-adaptive",
        action="store_true",
        help="always replicate every unit to the job's redundancy",
    )
    trust.add_argument(
        "--any-address",
        action="store_true",
        help="let replicas of one unit go to volunteers in the same address block",
    )
    add_limit_flags(trust)
    trust.add_argument(
        "--trust-local",
        action="store_true",
        help="count results from volunteers on this machine (loopback) as proven, so that "
        "they can get units accepted before anyone has a record (the operator's own "
        "volunteers; also ALLMENDE_TRUST_LOCAL=1). Off by default: a unit is accepted only "
        "with a result that passed gold rows or comes from a volunteer with a record",
    )
    add_log_flags(p, sub=True)
    p.set_defaults(handler="allmende.coordinator.cli.coordinator_cmds:serve")
    p = csub.add_parser("fingerprint", help="print the coordinator key's fingerprint")
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    p.set_defaults(handler="allmende.coordinator.cli.coordinator_cmds:show_fingerprint")
    p = csub.add_parser(
        "rotate-key",
        help="replace the signing key with a new one the old key vouches for",
        description="Create a new coordinator key and sign its announcement with the old "
        "one. Volunteers and researchers pinned to the old fingerprint follow the signed "
        "chain to the new key; the old key is deleted. Restart `coordinator serve` after.",
    )
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    p.add_argument(
        "--reason",
        default="",
        help='why, kept in the signed rotation (e.g. "scheduled", "suspected compromise")',
    )
    p.set_defaults(handler="allmende.coordinator.cli.coordinator_cmds:rotate_key")
    p = csub.add_parser("top", help="live view of jobs, volunteers and validation (Textual)")
    admin_flags(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.set_defaults(handler="allmende.coordinator.cli.coordinator_cmds:top")

    job = sub.add_parser("job", help="create and inspect jobs")
    jsub = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = jsub.add_parser("create", help="upload an input file as a new job; prints the job id")
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--admin-token-file", required=True, help="the coordinator's admin.token")
    p.add_argument(
        "--kind",
        default=DEFAULT_KIND,
        help=f"task kind: {', '.join(sorted(KINDS))} (default {DEFAULT_KIND})",
    )
    p.add_argument(
        "--model",
        help="registry model name (default: the kind's own, e.g. "
        + ", ".join(f"{k.name}: {k.default_model}" for k in KINDS.values())
        + ")",
    )
    p.add_argument(
        "--input",
        required=True,
        help="a .jsonl, .csv, .tsv or .parquet file with id and text, or a .txt file; for "
        "image kinds a WebDataset .tar shard (KEY.jpg|png|webp + KEY.txt) or a .parquet with "
        "id, text and image (bytes)",
    )
    p.add_argument("--redundancy", type=positive, help="replicas per unit (default 2)")
    p.add_argument("--unit-size", type=positive, help="items per work unit (default 256)")
    p.add_argument("--tau", type=unit_interval, help="row agreement cosine (default 0.999)")
    p.add_argument(
        "--max-replicas",
        type=positive,
        help="results to try before a unit fails (default redundancy + 3)",
    )
    p.add_argument("--lease-seconds", type=positive, help="lease deadline (default 600)")
    p.add_argument("--dtype", choices=["float16", "int8"], help="result dtype (default float16)")
    p.add_argument(
        "--gold-fraction",
        type=fraction,
        help="share of each unit's rows that are hidden gold rows (default 0.02; 0: none)",
    )
    p.add_argument("--name", help="a name shown in job listings")
    add_rule_flags(p)
    p.add_argument(
        "--license",
        default="",
        help="the dataset's licence, a Hugging Face / SPDX identifier such as cc-by-4.0 "
        "(default: unknown, i.e. the input texts keep the licence they came with)",
    )
    p.set_defaults(handler="allmende.coordinator.cli.job_cmds:create")
    p = jsub.add_parser("status", help="show one job's progress")
    p.add_argument("job", help="the job id, or an unambiguous prefix of it (6+ characters)")
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    reader_flag(p)
    p.set_defaults(handler="allmende.coordinator.cli.job_cmds:status")
    p = jsub.add_parser("list", help="list jobs")
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    reader_flag(p)
    p.set_defaults(handler="allmende.coordinator.cli.job_cmds:list_jobs")
    for action, verb in (
        ("pause", "stop leasing a running job's units"),
        ("resume", "lease a paused job's units again"),
        ("cancel", "stop a job for good; leases out are cancelled"),
    ):
        p = jsub.add_parser(action, help=verb)
        p.add_argument("job", help="the job id, or an unambiguous prefix of it (6+ characters)")
        admin_flags(p)
        p.set_defaults(handler=f"allmende.coordinator.cli.admin_cmds:{action}")
    p = jsub.add_parser("set", help="change a job's priority, redundancy or tau")
    p.add_argument("job", help="the job id, or an unambiguous prefix of it (6+ characters)")
    admin_flags(p)
    p.add_argument("--priority", type=int, help="-1000 to 1000; higher is leased first")
    p.add_argument("--redundancy", type=positive, help="raise the replicas per unit")
    p.add_argument("--tau", type=unit_interval, help="row agreement cosine")
    p.set_defaults(handler="allmende.coordinator.cli.admin_cmds:set_job")

    model = sub.add_parser("model", help="models the coordinator serves to volunteers")
    msub = model.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = msub.add_parser(
        "add",
        help="upload a model folder (safetensors, JSON, tokenizer text); prints its pin",
        description="Upload a model folder in Hugging Face layout. Only *.safetensors, "
        "*.json, *.txt and *.md files are accepted: no pickle (.bin, .pt, .pth, .ckpt, "
        ".pkl), no code, no config asking for remote code. Hidden files are skipped. "
        "Volunteers that lack the model download it from the coordinator and check every "
        "file against the signed manifest. The model's pin is printed last.",
    )
    admin_flags(p)
    p.add_argument("--name", required=True, help="the model's name, as jobs will name it")
    p.add_argument("--path", required=True, help="the model folder")
    p.add_argument(
        "--kinds",
        default="embed-text",
        help="task kinds it serves, comma-separated (default embed-text)",
    )
    p.add_argument(
        "--dims", type=non_negative, help="vector width (default: the folder's config.json)"
    )
    p.add_argument(
        "--max-seq-length",
        type=non_negative,
        help="tokens per input (default: the folder's sentence-transformers or model config)",
    )
    p.add_argument(
        "--weights-file",
        default="model.safetensors",
        help="the weights file in the folder (default model.safetensors)",
    )
    p.set_defaults(handler="allmende.coordinator.cli.model_cmds:add")
    p = msub.add_parser("list", help="list the models the coordinator serves")
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    reader_flag(p)
    p.set_defaults(handler="allmende.coordinator.cli.model_cmds:list_models")

    volunteers = sub.add_parser("volunteers", help="see and ban volunteers (admin token)")
    vsub = volunteers.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = vsub.add_parser("list", help="volunteers with their results and last contact")
    admin_flags(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="allmende.coordinator.cli.admin_cmds:list_volunteers")
    p = vsub.add_parser("ban", help="refuse a volunteer's work from now on")
    p.add_argument("volunteer", help="volunteer id (or a unique prefix)")
    p.add_argument("--reason", default="", help="shown to the volunteer and in the log")
    admin_flags(p)
    p.set_defaults(handler="allmende.coordinator.cli.admin_cmds:ban")
    p = vsub.add_parser("unban", help="accept a banned volunteer's work again")
    p.add_argument("volunteer", help="volunteer id (or a unique prefix)")
    admin_flags(p)
    p.set_defaults(handler="allmende.coordinator.cli.admin_cmds:unban")
