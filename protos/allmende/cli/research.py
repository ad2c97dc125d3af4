"""The researcher's command group: `allmende dataset pull|verify|versions|remove|export|
index|search`.

Researchers have no source root of their own: what they run uses only the protocol and the
API client (allmende.api.dataset, protocol/manifest.py), so their commands live on the top
floor's role-free side, here in protos/. Only argparse in this module: the handlers
(dataset_cmds.py) are imported when they run."""

from __future__ import annotations

import argparse

from allmende.cli.flags import address, admin_flags, at_least, number, positive, reader_flag


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dataset = sub.add_parser("dataset", help="download and verify datasets")
    dsub = dataset.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = dsub.add_parser("pull", help="download a finished job's dataset, verifying everything")
    p.add_argument("job", help="the job id, or an unambiguous prefix of it (6+ characters)")
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--fingerprint", required=True, help="the coordinator fingerprint to trust")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument(
        "--jobs",
        type=at_least(1),
        default=4,
        help="shards to download at once (default 4); files already present with the "
        "right sha256 are kept, partial ones resumed",
    )
    reader_flag(p)
    p.set_defaults(handler="allmende.cli.dataset_cmds:pull")
    p = dsub.add_parser("verify", help="re-check a downloaded dataset folder")
    p.add_argument("folder", help="a folder written by `dataset pull`")
    p.add_argument("--fingerprint", required=True, help="the coordinator fingerprint to trust")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sample = p.add_mutually_exclusive_group()
    sample.add_argument(
        "--recompute",
        type=share,
        metavar="FRACTION",
        help="also recompute this share of the rows, in (0, 1], with the dataset's pinned "
        "model on this machine and compare them with the dataset's (needs allmende[volunteer])",
    )
    sample.add_argument(
        "--recompute-rows",
        type=positive,
        metavar="N",
        help="also recompute N random rows (all of them if the dataset has fewer)",
    )
    p.add_argument("--seed", type=positive, help="the sample's random seed (printed otherwise)")
    p.add_argument(
        "--images",
        action="append",
        metavar="PATH",
        help="for image datasets (clip-filter, embed-image): the job's inputs as given to "
        "`job create`, WebDataset .tar shards and/or .parquet with id and image, or a folder "
        "of them (repeatable); rows are matched by id and their image checked by sha256; "
        "sampled rows without one are skipped",
    )
    p.add_argument(
        "--model-dir",
        metavar="DIR",
        help="the folder of the dataset's model, for models this install does not know "
        "(e.g. one a coordinator served); checked against the dataset's pin",
    )
    compute_flags(p)
    p.set_defaults(handler="allmende.cli.dataset_cmds:verify")
    p = dsub.add_parser("versions", help="list the versions of a job's dataset")
    p.add_argument("job", help="the job id, or an unambiguous prefix of it (6+ characters)")
    p.add_argument("--coordinator", type=address, required=True, help="HOST:PORT")
    p.add_argument("--fingerprint", required=True, help="the coordinator fingerprint to trust")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    reader_flag(p)
    p.set_defaults(handler="allmende.cli.dataset_cmds:versions")
    p = dsub.add_parser(
        "remove",
        help="(admin) publish a new version of a job's dataset without some rows (takedown)",
    )
    p.add_argument("job", help="the job id, or an unambiguous prefix of it (6+ characters)")
    p.add_argument("--ids", required=True, help="a file of item ids to remove, one a line")
    p.add_argument("--reason", required=True, help="why; published in the new manifest")
    admin_flags(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="allmende.cli.dataset_cmds:remove")
    p = dsub.add_parser("export", help="write a verified dataset folder in another tool's layout")
    p.add_argument("folder", help="a folder written by `dataset pull`")
    p.add_argument("out", help="the folder to write (created)")
    p.add_argument(
        "--format",
        required=True,
        choices=["clip-retrieval"],
        help="clip-retrieval: img_emb/img_emb_N.npy, text_emb/text_emb_N.npy, "
        "metadata/metadata_N.parquet in matching order (for clip_index and autofaiss)",
    )
    p.add_argument("--fingerprint", required=True, help="the coordinator fingerprint to trust")
    p.set_defaults(handler="allmende.cli.dataset_cmds:export")
    p = dsub.add_parser(
        "index", help="build a nearest-neighbour index over an embedding column of a folder"
    )
    p.add_argument("folder", help="a folder written by `dataset pull`")
    p.add_argument("--column", default="embedding", help="the vector column (default embedding)")
    p.add_argument(
        "--type",
        choices=("auto", "flat", "hnsw"),
        default="auto",
        help="exact (flat) or HNSW; auto: exact below 20,000 rows, HNSW from there on",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler="allmende.cli.search_cmds:index")
    p = dsub.add_parser(
        "search", help="the rows nearest to a text, embedded with the dataset's own model"
    )
    p.add_argument("folder", help="a folder with an index (`dataset index`)")
    p.add_argument("query", help="the text to search for")
    p.add_argument("-k", type=positive, default=10, help="how many rows (default 10)")
    p.add_argument("--column", default="embedding", help="the indexed column (default embedding)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    compute_flags(p)
    p.set_defaults(handler="allmende.cli.search_cmds:search")


def share(value: str) -> float:
    """An argparse type: a share of the rows, in (0, 1]."""
    given = number(value)
    if not 0.0 < given <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {value}")
    return given


def compute_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="where the model runs: auto, cpu or cuda:N (default auto)"
    )
    p.add_argument("--batch-size", type=positive, default=64, help="rows per batch (default 64)")
