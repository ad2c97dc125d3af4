"""import-linter's contracts (pyproject.toml, [tool.importlinter]) over this checkout only.

`python tests/importcheck.py` lints as `lint-imports` does and exits 0 when every contract
is kept. `python tests/importcheck.py IMPORTER:IMPORTED ...` adds each import in turn to
this checkout's real import graph and prints, as one JSON object, the contracts each one
breaks, and under "as it is" those broken without any (tests/unit/test_import_contracts.py
proves with it that the contracts bite).

Only this checkout's source roots are analysed: `allmende` is a namespace package, and an
editable install of another checkout on sys.path would add its portions to the graph.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [str(ROOT / "client"), str(ROOT / "coordinator"), str(ROOT / "protos")]
CONFIG = str(ROOT / "pyproject.toml")


def only_this_checkout() -> None:
    """This checkout's source roots first, and no other directory that holds `allmende`."""
    others = [
        p for p in sys.path if p not in SOURCES and not (Path(p or ".") / "allmende").is_dir()
    ]
    sys.path[:] = [*SOURCES, *others]


def lint() -> bool:
    from importlinter import configuration
    from importlinter.application.use_cases import lint_imports

    configuration.configure()
    return bool(lint_imports(config_filename=CONFIG, cache_dir=None, no_logo=True))


class Prebuilt:
    """A graph builder for import-linter that hands out a graph built beforehand."""

    def __init__(self, graph: object) -> None:
        self.graph = graph

    def build(self, *args: object, **kwargs: object) -> object:
        return self.graph


def broken_by(imports: list[tuple[str, str]]) -> dict[str, list[str]]:
    """For each added import: the names of the contracts it breaks ("as it is": those the
    graph without additions breaks)."""
    import grimp
    from importlinter import configuration
    from importlinter.application import use_cases
    from importlinter.application.app_config import settings

    configuration.configure()
    # What lint_imports does before it reads contracts (create_report assumes it was done).
    use_cases._register_built_in_contract_types()
    options = use_cases.read_user_options(config_filename=CONFIG)
    graph = grimp.build_graph("allmende", include_external_packages=True, cache_dir=None)
    broken: dict[str, list[str]] = {}
    for importer, imported in [("", ""), *imports]:  # first the graph as it is
        changed = copy.deepcopy(graph)  # contracts remove ignored imports from their graph
        if importer:
            changed.add_import(importer=importer, imported=imported)

        settings.configure(GRAPH_BUILDER=Prebuilt(changed))
        report = use_cases.create_report(options, cache_dir=None)
        broken[f"{importer} -> {imported}" if importer else "as it is"] = [
            contract.name for contract, check in report.get_contracts_and_checks() if not check.kept
        ]
    return broken


def main(argv: list[str]) -> int:
    only_this_checkout()
    if not argv:
        return 0 if lint() else 1
    pairs = [tuple(arg.split(":", 1)) for arg in argv]
    print(json.dumps(broken_by([(a, b) for a, b in pairs])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
