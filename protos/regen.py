"""Regenerate the checked-in protobuf and gRPC code: `python protos/regen.py`.

With `--check`, generate into a temporary folder and exit 1 if the checked-in files differ.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "allmende" / "v1"
OUTPUTS = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    for proto in protos:
        args = [
            "protoc",
            f"-I{ROOT}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(proto.relative_to(ROOT)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    return [Path("allmende/v1") / f"{proto.stem}{suffix}" for proto in protos for suffix in OUTPUTS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        drifted = [
            f
            for f in files
            if not (ROOT / f).exists() or not filecmp.cmp(Path(tmp) / f, ROOT / f, shallow=False)
        ]
        if args.check:
            for f in drifted:
                print(f"drifted: protos/{f}", file=sys.stderr)
            return 1 if drifted else 0
        for f in files:
            shutil.copyfile(Path(tmp) / f, ROOT / f)
            print(f"wrote protos/{f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
