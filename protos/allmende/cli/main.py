"""Argument parsing and dispatch for `allmende`. Subcommand modules import lazily, so a
volunteer install never imports the coordinator's dependencies and vice versa."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from allmende.cli.common import EXIT_CODES_HELP, EXIT_USAGE, CliError, err
from allmende.cli.limit_flags import add_limit_flags
from allmende.cli.logs import add_log_flags, setup_logging
from allmende.cli.parser import CliParser, version_text
from allmende.protocol.errors import AllmendeError, InvalidArgument


def _address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `least`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < least:
            raise argparse.ArgumentTypeError(f"expected a number >= {least}, got {number}")
        return number

    return parse


_positive = _at_least(1)
_non_negative = _at_least(0)


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None


def _fraction(value: str) -> float:
    number = _number(value)
    if not 0.0 <= number <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 0.5, got {number}")
    return number


def _unit_interval(value: str) -> float:
    number = _number(value)
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a cosine in (0, 1], got {number}")
    return number


def _admin_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordinator", type=_address, required=True, help="HOST:PORT")
    p.add_argument("--admin-token-file", required=True, help="the coordinator's admin.token")


def _reader_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token-file",
        help="for a coordinator serving --private: its reader.token (or admin.token)",
    )


def _db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("ALLMENDE_DB") or None,
        metavar="URL",
        help="the database: sqlite:///PATH, or postgresql://USER@HOST/DB to let several "
        "coordinators share one (default: coordinator.db in --data) [ALLMENDE_DB]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="allmende",
        description="Allmende: volunteers compute, quorums verify, researchers get open datasets.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug details (--log-level debug)"
    )
    parser.add_argument("--version", action="version", version=version_text())
    add_log_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    coordinator = sub.add_parser("coordinator", help="run and manage a coordinator")
    csub = coordinator.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = csub.add_parser("init", help="create the signing key, admin token and database")
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    _db_flag(p)
    p.add_argument("--tls-cert", help="use this PEM certificate instead of a self-signed one")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    p.add_argument(
        "--tls-name",
        action="append",
        default=[],
        help="a host name or address to put in the self-signed certificate",
    )
    p.set_defaults(handler="coordinator_cmds:init")
    p = csub.add_parser("serve", help="serve volunteers, admins and researchers over gRPC")
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    _db_flag(p)
    p.add_argument(
        "--listen",
        type=_address,
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
        type=_address,
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
        type=_positive,
        default=200,
        help="units a new volunteer may lease per UTC day (default 200)",
    )
    trust.add_argument(
        "--quota-per-valid",
        type=_non_negative,
        default=2,
        help="more units per day for each validated result (default 2)",
    )
    trust.add_argument(
        "--adaptive-after",
        type=_positive,
        default=10,
        help="consecutive valid results before a volunteer's units may go unreplicated "
        "(default 10)",
    )
    trust.add_argument(
        "--replication-floor",
        type=_unit_interval,
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
    p.set_defaults(handler="coordinator_cmds:serve")
    p = csub.add_parser("fingerprint", help="print the coordinator key's fingerprint")
    p.add_argument("--data", required=True, help="the coordinator's data folder")
    p.set_defaults(handler="coordinator_cmds:show_fingerprint")
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
    p.set_defaults(handler="coordinator_cmds:rotate_key")
    p = csub.add_parser("top", help="live view of jobs, volunteers and validation (Textual)")
    _admin_flags(p)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.set_defaults(handler="coordinator_cmds:top")

    job = sub.add_parser("job", help="create and inspect jobs")
    jsub = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = jsub.add_parser("create", help="upload an input file as a new job; prints the job id")
    p.add_argument("--coordinator", type=_address, required=True, help="HOST:PORT")
    p.add_argument("--admin-token-file", required=True, help="the coordinator's admin.token")
    p.add_argument("--kind", default="embed-text", help="task kind (default embed-text)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="registry model name")
    p.add_argument(
        "--input",
        required=True,
        help="a .jsonl, .csv, .tsv or .parquet file with id and text, or a .txt file",
    )
    p.add_argument("--redundancy", type=_positive, help="replicas per unit (default 2)")
    p.add_argument("--unit-size", type=_positive, help="items per work unit (default 256)")
    p.add_argument("--tau", type=_unit_interval, help="row agreement cosine (default 0.999)")
    p.add_argument(
        "--max-replicas",
        type=_positive,
        help="results to try before a unit fails (default redundancy + 3)",
    )
    p.add_argument("--lease-seconds", type=_positive, help="lease deadline (default 600)")
    p.add_argument("--dtype", choices=["float16", "int8"], help="result dtype (default float16)")
    p.add_argument(
        "--gold-fraction",
        type=_fraction,
        help="share of each unit's rows that are hidden gold rows (default 0.02; 0: none)",
    )
    p.add_argument("--name", help="a name shown in job listings")
    p.set_defaults(handler="job_cmds:create")
    p = jsub.add_parser("status", help="show one job's progress")
    p.add_argument("job", help="the job id")
    p.add_argument("--coordinator", type=_address, required=True, help="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _reader_flag(p)
    p.set_defaults(handler="job_cmds:status")
    p = jsub.add_parser("list", help="list jobs")
    p.add_argument("--coordinator", type=_address, required=True, help="HOST:PORT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _reader_flag(p)
    p.set_defaults(handler="job_cmds:list_jobs")
    for action, verb in (
        ("pause", "stop leasing a running job's units"),
        ("resume", "lease a paused job's units again"),
        ("cancel", "stop a job for good; leases out are cancelled"),
    ):
        p = jsub.add_parser(action, help=verb)
        p.add_argument("job", help="the job id")
        _admin_flags(p)
        p.set_defaults(handler=f"admin_cmds:{action}")
    p = jsub.add_parser("set", help="change a job's priority, redundancy or tau")
    p.add_argument("job", help="the job id")
    _admin_flags(p)
    p.add_argument("--priority", type=int, help="-1000 to 1000; higher is leased first")
    p.add_argument("--redundancy", type=_positive, help="raise the replicas per unit")
    p.add_argument("--tau", type=_unit_interval, help="row agreement cosine")
    p.set_defaults(handler="admin_cmds:set_job")

    volunteers = sub.add_parser("volunteers", help="see and ban volunteers (admin token)")
    vsub = volunteers.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = vsub.add_parser("list", help="volunteers with their results and last contact")
    _admin_flags(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="admin_cmds:list_volunteers")
    p = vsub.add_parser("ban", help="refuse a volunteer's work from now on")
    p.add_argument("volunteer", help="volunteer id (or a unique prefix)")
    p.add_argument("--reason", default="", help="shown to the volunteer and in the log")
    _admin_flags(p)
    p.set_defaults(handler="admin_cmds:ban")
    p = vsub.add_parser("unban", help="accept a banned volunteer's work again")
    p.add_argument("volunteer", help="volunteer id (or a unique prefix)")
    _admin_flags(p)
    p.set_defaults(handler="admin_cmds:unban")

    p = sub.add_parser(
        "volunteer",
        help="donate compute to a coordinator",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from allmende.client.settings import add_setting_flags

    add_setting_flags(p)  # every setting is a flag, an ALLMENDE_ variable and a TOML key
    p.add_argument("--headless", action="store_true", help="log lines instead of the TUI")
    p.add_argument("--json", action="store_true", help="with --headless: one JSON object per line")
    p.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit 0 once no work is left for this volunteer and nothing is in flight",
    )
    p.add_argument(
        "--home",
        help="the volunteer's folder: key, unsent results and (then) volunteer.toml "
        "(default: platform data dir) [ALLMENDE_HOME]",
    )
    p.add_argument(
        "--config",
        help="the settings file (default: volunteer.toml in the platform config folder, "
        "or in --home) [ALLMENDE_CONFIG]",
    )
    p.add_argument("--setup", action="store_true", help="show the first-run screen again")
    add_log_flags(p, sub=True)
    p.set_defaults(handler="volunteer_cmds:volunteer")

    dataset = sub.add_parser("dataset", help="download and verify datasets")
    dsub = dataset.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = dsub.add_parser("pull", help="download a finished job's dataset, verifying everything")
    p.add_argument("job", help="the job id")
    p.add_argument("--coordinator", type=_address, required=True, help="HOST:PORT")
    p.add_argument("--fingerprint", required=True, help="the coordinator fingerprint to trust")
    p.add_argument("--out", required=True, help="the folder to write")
    _reader_flag(p)
    p.set_defaults(handler="dataset_cmds:pull")
    p = dsub.add_parser("verify", help="re-check a downloaded dataset folder")
    p.add_argument("folder", help="a folder written by `dataset pull`")
    p.add_argument("--fingerprint", required=True, help="the coordinator fingerprint to trust")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="dataset_cmds:verify")

    p = sub.add_parser("demo", help="run a coordinator, two volunteers and a job end to end")
    p.add_argument(
        "--dir", default="allmende-demo", help="working folder (default ./allmende-demo)"
    )
    p.add_argument("--input", help="use this input file instead of the bundled corpus")
    p.add_argument(
        "--headless", action="store_true", help="progress lines instead of the TUI in a terminal"
    )
    p.set_defaults(handler="demo:demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module_name, func_name = args.handler.split(":")
    try:
        setup_logging(args)
        module = importlib.import_module(f"allmende.cli.{module_name}")
        return int(getattr(module, func_name)(args))
    except CliError as exc:
        err(f"allmende: {exc.message}")
        return exc.code
    except InvalidArgument as exc:
        err(f"allmende: {exc.message}")
        return EXIT_USAGE
    except AllmendeError as exc:
        err(f"allmende: {exc.message}")
        return 1
    except ModuleNotFoundError as exc:
        err(
            f"allmende: {exc.name} is not installed; install the extra for this role, "
            "e.g. pip install 'allmende[coordinator]' or 'allmende[volunteer]'"
        )
        return 1
    except KeyboardInterrupt:
        err("allmende: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
