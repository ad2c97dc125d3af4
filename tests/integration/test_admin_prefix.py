"""Admin actions take an id or an unambiguous prefix of at least 6 characters, jobs and
volunteers alike, resolved by the coordinator (domain/admin.py) so the CLI and `coordinator
top` agree; a short or ambiguous prefix is refused with what it matched and changes nothing.
Against a real coordinator on port 0; the CLI in-process through `allmende.cli.main.main`."""

from __future__ import annotations

import pytest

from allmende.cli.main import main
from allmende.client.connection import CoordinatorClient
from allmende.coordinator.app import RunningCoordinator
from allmende.coordinator.home import CoordinatorHome
from allmende.coordinator.store.records import VolunteerRecord
from allmende.v1 import allmende_pb2 as pb
from tests.conftest import job_requests
from tests.integration.test_admin import refused
from tests.store.helpers import make_job

TWINS = ["1a2b3c" + "0" * 58, "1a2b3c" + "f" * 58]  # share 6 characters
LONER = "9f8e7d6c" + "5" * 56


@pytest.fixture
def volunteers(coordinator: RunningCoordinator) -> list[str]:
    store = coordinator.coordinator.store
    for n, vid in enumerate([*TWINS, LONER]):
        store.put_volunteer(VolunteerRecord(vid, bytes([n]) * 32, f"host-{n}", "0.1", "cpu", 1))
    return [*TWINS, LONER]


def banned(admin: CoordinatorClient) -> set[str]:
    return {v.volunteer_id for v in admin.list_volunteers() if v.banned}


def test_a_job_prefix_of_six_characters_with_or_without_job_works(
    admin: CoordinatorClient,
) -> None:
    job_id = admin.create_job(job_requests(["a", "b"])).job_id
    assert admin.pause_job(job_id[:10]).job_id == job_id  # "job-" + 6
    assert admin.resume_job(job_id[4:10]).job_id == job_id  # the 6 without "job-"
    updated = admin.update_job(pb.UpdateJobRequest(job_id=job_id[4:12], priority=7))
    assert (updated.job_id, updated.priority) == (job_id, 7)
    assert admin.cancel_job(job_id).state == "cancelled"  # the whole id, as before


def test_a_short_job_prefix_is_refused_and_lists_what_it_matched(
    admin: CoordinatorClient,
) -> None:
    job_id = admin.create_job(job_requests(["a", "b"])).job_id
    details = refused(lambda: admin.cancel_job(job_id[:9]), "INVALID_ARGUMENT", "job_id",
                      "at least 6 characters", job_id)
    assert "matches 1 job" in details
    refused(lambda: admin.cancel_job(job_id[4:6]), "INVALID_ARGUMENT", "at least 6")
    refused(lambda: admin.cancel_job("job-"), "INVALID_ARGUMENT", "at least 6")
    assert admin.get_job(job_id).state == "running"


def test_an_ambiguous_job_prefix_is_refused_and_changes_nothing(
    coordinator: RunningCoordinator, admin: CoordinatorClient,
) -> None:
    store = coordinator.coordinator.store
    make_job(store, "job-abcdef000001", texts=1, unit_size=1)  # type: ignore[arg-type]
    make_job(store, "job-abcdef000002", texts=1, unit_size=1)  # type: ignore[arg-type]
    for prefix in ("abcdef", "job-abcdef0000"):
        refused(lambda p=prefix: admin.cancel_job(p), "INVALID_ARGUMENT",  # type: ignore[misc]
                "matches 2 jobs", "job-abcdef000001", "job-abcdef000002")
    assert {j.state for j in admin.list_jobs()} == {"running"}
    assert admin.cancel_job("abcdef000002").job_id == "job-abcdef000002"
    refused(lambda: admin.pause_job("job-abcdee"), "NOT_FOUND", "job-abcdee")


def test_a_one_character_volunteer_prefix_bans_nobody(
    admin: CoordinatorClient, volunteers: list[str],
) -> None:
    details = refused(lambda: admin.ban_volunteer("1", "x"), "INVALID_ARGUMENT",
                      "volunteer_id", "at least 6 characters", "matches 2 volunteers")
    assert TWINS[0][:16] in details and TWINS[1][:16] in details
    refused(lambda: admin.ban_volunteer("1a2b3c", "x"), "INVALID_ARGUMENT",
            "matches 2 volunteers")
    refused(lambda: admin.unban_volunteer("1a2b3c"), "INVALID_ARGUMENT", "matches 2")
    refused(lambda: admin.ban_volunteer("000000", "x"), "NOT_FOUND", "'000000'")
    assert banned(admin) == set()


@pytest.mark.parametrize("kind", ["job", "volunteer"])
def test_an_id_longer_than_any_id_is_refused_before_it_is_looked_up(
    admin: CoordinatorClient, volunteers: list[str], kind: str,
) -> None:
    # 60,000 characters: past SQLite's longest LIKE pattern (50,000 bytes), which answered
    # INTERNAL; the fuzz test found it.
    call = admin.ban_volunteer if kind == "volunteer" else admin.cancel_job
    args = ("x" * 60_000, "r") if kind == "volunteer" else ("x" * 60_000,)
    refused(lambda: call(*args), "INVALID_ARGUMENT", f"{kind}_id", "at most 128 characters")
    assert banned(admin) == set()


def test_an_unambiguous_volunteer_prefix_bans_that_volunteer(
    admin: CoordinatorClient, volunteers: list[str],
) -> None:
    assert admin.ban_volunteer("9f8e7d", "copied").volunteer_id == LONER
    assert admin.ban_volunteer(TWINS[1][:7], "copied").volunteer_id == TWINS[1]
    assert banned(admin) == {LONER, TWINS[1]}
    assert admin.unban_volunteer(LONER[:12]).volunteer_id == LONER
    assert banned(admin) == {TWINS[1]}


# ---------------------------------------------------------------- the same from the CLI


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_volunteers_ban_by_a_short_prefix_exits_2_and_lists_the_matches(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, admin: CoordinatorClient, volunteers: list[str],
) -> None:
    flags = ["--coordinator", coordinator.address, "--admin-token-file",
             str(coordinator_home.token_path)]
    code, out, err = cli(capsys, "volunteers", "ban", "1", "--reason", "x", *flags)
    assert code == 2, err
    assert out == ""
    assert "at least 6 characters" in err and "matches 2 volunteers" in err
    assert TWINS[0][:16] in err and TWINS[1][:16] in err
    assert banned(admin) == set()
    code, out, err = cli(capsys, "volunteers", "ban", "9f8e7d", "--reason", "copied", *flags)
    assert code == 0, err
    assert out.strip() == f"banned {LONER} (host-2): copied"
    code, out, err = cli(capsys, "volunteers", "unban", "9f8e7d", *flags)
    assert code == 0, err
    assert out.startswith(f"unbanned {LONER} (host-2): now offline")
    assert banned(admin) == set()


def test_cli_job_actions_by_prefix_say_what_they_did(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, admin: CoordinatorClient,
) -> None:
    job_id = admin.create_job(job_requests(["a", "b"], name="captions")).job_id
    flags = ["--coordinator", coordinator.address, "--admin-token-file",
             str(coordinator_home.token_path)]
    code, out, err = cli(capsys, "job", "pause", job_id[4:10], *flags)
    assert code == 0, err
    assert out.startswith(f"paused {job_id} (captions): now paused, 0/1 units accepted")
    code, out, err = cli(capsys, "job", "set", job_id[:10], "--priority", "3", *flags)
    assert code == 0, err
    assert out.startswith(f"updated {job_id} (captions): now paused") and "priority 3" in out
    code, out, err = cli(capsys, "job", "cancel", job_id[:7], *flags)
    assert code == 2
    assert "at least 6 characters" in err and job_id in err
    assert admin.get_job(job_id).state == "paused"
    code, out, err = cli(capsys, "job", "cancel", job_id[4:10], *flags)
    assert code == 0, err
    assert out.startswith(f"cancelled {job_id} (captions): now cancelled")
    assert admin.get_job(job_id).state == "cancelled"


def test_job_status_takes_a_prefix_and_says_when_nothing_matches(
    capsys: pytest.CaptureFixture[str], coordinator: RunningCoordinator,
    coordinator_home: CoordinatorHome, admin: CoordinatorClient,
) -> None:
    job_id = admin.create_job(job_requests(["a", "b"], name="captions")).job_id
    flags = ["--coordinator", coordinator.address, "--token-file",
             str(coordinator_home.token_path)]
    for given in (job_id, job_id[:10], job_id[4:12]):
        code, out, err = cli(capsys, "job", "status", given, *flags)
        assert code == 0, err
        assert out.startswith(f"job       {job_id}  captions")
    assert admin.get_job(job_id[4:11]).job_id == job_id  # the RPC resolves it too
    code, out, err = cli(capsys, "job", "status", job_id[4:7], *flags)
    assert code == 2 and out == ""
    assert "at least 6 characters" in err and job_id in err
    code, out, err = cli(capsys, "job", "status", "0f0f0f0f", *flags)
    assert code != 0 and out == ""
    assert "NOT_FOUND" in err and "'0f0f0f0f' does not exist" in err
