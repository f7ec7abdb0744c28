"""Short runs of the fault and soak harnesses (bench/faults.py, bench/soak.py).

The full runs are ``python -m bench.faults`` and ``python -m bench.soak``; here
each phase lasts a second so the whole module stays well under 40 s.
"""

from collections.abc import Iterator
from typing import Any

import pytest

from bench import faults, soak
from tests.redis_servers import require_redis_server

pytestmark = pytest.mark.redis

ORDER = ["baseline", "redis killed", "redis restarted", "redis paused", "redis resumed"]


@pytest.fixture(scope="module")
def single_node_run() -> Iterator[dict[str, Any]]:
    """One reduced fault run over the single-node phases (kill, restart, pause, resume)."""
    require_redis_server()
    # Each phase outlasts the breaker's hold (RECOVERY_TIMEOUT = 1 s) with room to spare, so
    # "redis restarted" always sees the cache working again before it ends.
    yield faults.main(duration_per_phase=2.5, phases=ORDER, workers=16, quiet=True)


def by_phase(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["phase"]: row for row in run["phases"]}


# -- the checker itself ---------------------------------------------------------------------------------------------


def checking_load() -> faults.Load:
    load = faults.Load(client=None, workers=0, seed=0)  # type: ignore[arg-type]  # never sends anything here
    load.phase = faults.Phase("check")
    return load


def record() -> faults.Record:
    return faults.Record(0.0, 0.0, "get", 200, None, "HIT")


def test_the_checker_flags_stale_and_wrong_pages() -> None:
    load = checking_load()
    page = [{"id": i, "space_id": 1, "name": "Spoon", "price": 1.0} for i in range(11, 21)]
    load._check_page("/spaces/1/items?page=2&limit=10", 1, 11, 10, {}, 30, page, record())
    assert (load.phase.stale, load.phase.wrong) == (0, 0)
    # Item 12 was acknowledged as v3: a page still showing its initial name is stale.
    load._check_page("/spaces/1/items?page=2&limit=10", 1, 11, 10, {12: 3}, 30, page, record())
    assert load.phase.stale == 1
    # Fewer items than acknowledged creations.
    load._check_page("/spaces/1/items?page=2&limit=10", 1, 11, 10, {}, 30, page[:4], record())
    assert load.phase.stale == 2
    # Some other page's items: wrong, not stale.
    load._check_page("/spaces/1/items?page=3&limit=10", 1, 21, 10, {}, 30, page, record())
    assert load.phase.wrong == 1
    assert len(load.tracker.examples) == 3


def test_the_checker_flags_a_space_count_below_acknowledged_creations() -> None:
    load = checking_load()
    spaces = [{"id": 1, "name": "Kitchen", "item_count": 30}, {"id": 2, "name": "Garage", "item_count": 4}]
    load._check_spaces("/spaces", None, spaces, {1: 30, 2: 4}, record())
    assert load.phase.stale == 0
    load._check_spaces("/spaces", None, spaces, {1: 30, 2: 5}, record())
    assert load.phase.stale == 1


def test_recovery_time_is_the_end_of_the_first_window_above_target() -> None:
    records = [faults.Record(t / 100, t / 100, "get", 200, None, "HIT" if t >= 150 else "SKIP") for t in range(300)]
    found = faults.recovery_time(records, event_at=1.0, target=0.5)
    assert found is not None
    assert 0.9 < found < 1.1  # half the window [t-1, t] is HIT from t = 2.0
    assert faults.recovery_time(records[:150], event_at=1.0, target=0.5) is None


def test_soak_verdict_measures_the_second_half() -> None:
    backend = {"entries": 10, "size_bytes": 100, "max_bytes": 1000, "max_entries": 100}
    samples = [soak.Sample(float(t), 50.0 + t, backend, 0) for t in range(11)]
    result = soak.verdict(samples, limit_mib=4.0)
    assert result["rss_growth_second_half_mib"] == 5.0
    assert not result["rss_ok"]
    assert result["within_budget"]
    over = [*samples[:-1], soak.Sample(10.0, 60.0, {**backend, "size_bytes": 1001}, 0)]
    assert not soak.verdict(over)["within_budget"]


# -- reduced runs ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_faults_never_answer_5xx(single_node_run: dict[str, Any]) -> None:
    phases = by_phase(single_node_run)
    assert list(phases) == ORDER
    assert single_node_run["server_errors_5xx"] == 0, single_node_run["phases"]
    assert single_node_run["server_log_problems"] == []
    assert single_node_run["wrong_responses"] == 0, single_node_run["violations"]
    for name in ORDER:
        assert phases[name]["requests"] > 20, phases[name]  # traffic kept flowing through every fault
    assert phases["redis killed"]["x_cache"].get("SKIP", 0) > 0  # the outage was seen...
    assert phases["redis killed"]["server"]["breaker_opened"] >= 1
    assert phases["redis paused"]["x_cache"].get("SKIP", 0) > 0
    # Requests wait at most a few socket timeouts, never the client's timeout.
    assert phases["redis paused"]["max_ms"] < 5 * faults.SOCKET_TIMEOUT * 1000 + 1500
    assert not any(phase["client_errors"] for phase in single_node_run["phases"])


@pytest.mark.slow
def test_faults_no_stale_reads_after_kill_and_restart(single_node_run: dict[str, Any]) -> None:
    phases = by_phase(single_node_run)
    for name in ("baseline", "redis killed", "redis restarted"):
        assert phases[name]["stale_reads"] == 0, single_node_run["violations"]
    restarted = phases["redis restarted"]["x_cache"]
    assert restarted.get("HIT", 0) + restarted.get("MISS", 0) > 0  # ...and is over: entries are stored again


@pytest.mark.slow
def test_faults_no_stale_reads_after_pause_and_resume(single_node_run: dict[str, Any]) -> None:
    phases = by_phase(single_node_run)
    # Requests still in flight as a phase ends are checked too ("after <phase>" in the examples);
    # the run's total counts them, the rows do not.
    elsewhere = sum(row["stale_reads"] for name, row in phases.items() if name != "redis resumed")
    assert elsewhere == 0, single_node_run["violations"]
    unexplained = [text for text in single_node_run["violations"] if "resumed]" not in text]
    assert unexplained == []
    # Writes acknowledged while Redis was unreachable keep their invalidations and
    # land them before the writing process trusts Redis again.
    assert phases["redis resumed"]["stale_reads"] == 0, single_node_run["violations"]


@pytest.mark.slow
def test_soak_short_run_gives_a_verdict() -> None:
    result = soak.main(minutes=0.1, workers=8, quiet=True)
    assert len(result["samples"]) >= 3
    assert result["requests"] > 100
    assert result["server_errors_5xx"] == 0
    assert result["within_budget"]
    assert isinstance(result["rss_ok"], bool)
    assert result["rss_growth_second_half_mib"] < soak.RSS_GROWTH_LIMIT_MIB
    assert result["server_log_problems"] == []
