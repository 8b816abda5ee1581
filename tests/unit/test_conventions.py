"""The conventions table of ../shared/conventions.md, reproduced exactly from the data file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from qm_otel.core.conventions import PATH, ConventionsError, classify, conventions, load, load_with_overrides

# (quantity, value, band) — every edge of the table; "250-300 acceptable" includes 250 and 300
EDGES = [
    ("bootstrap", 0, "optimal"), ("bootstrap", 249.999, "optimal"), ("bootstrap", 250, "acceptable"),
    ("bootstrap", 300, "acceptable"), ("bootstrap", 300.001, "warning"), ("bootstrap", 400, "warning"),
    ("bootstrap", 400.001, "error"),
    ("response_time", 49.9, "optimal"), ("response_time", 50, "acceptable"), ("response_time", 100, "acceptable"),
    ("response_time", 100.1, "warning"), ("response_time", 200, "warning"), ("response_time", 200.1, "error"),
    ("cache_hit_rate", 100, "optimal"), ("cache_hit_rate", 85.01, "optimal"), ("cache_hit_rate", 85, "acceptable"),
    ("cache_hit_rate", 80, "acceptable"), ("cache_hit_rate", 79.99, "warning"), ("cache_hit_rate", 70, "warning"),
    ("cache_hit_rate", 69.99, "error"), ("cache_hit_rate", 0, "error"),
    ("memory", 49.9, "optimal"), ("memory", 50, "acceptable"), ("memory", 80, "acceptable"),
    ("memory", 80.1, "warning"), ("memory", 100, "warning"), ("memory", 100.1, "error"),
]
OUTCOMES = {"optimal": ("INFO", "SUCCESS"), "acceptable": ("INFO", "SUCCESS"),
            "warning": ("WARNING", "DEGRADED"), "error": ("ERROR", "DEGRADED")}
TRANSITIONS = [  # from, to, level, status, message — the breaker table
    ("CLOSED", "OPEN", "ERROR", "FAILURE", "Circuit breaker opened"),
    ("OPEN", "HALF_OPEN", "INFO", "INFO", "Testing circuit breaker"),
    ("HALF_OPEN", "CLOSED", "INFO", "SUCCESS", "Circuit breaker closed"),
    ("HALF_OPEN", "OPEN", "WARNING", "DEGRADED", "Circuit breaker remains open"),
]


@pytest.mark.parametrize(("quantity", "value", "band"), EDGES)
def test_every_band_edge(quantity: str, value: float, band: str) -> None:
    verdict = classify(quantity, value)
    assert verdict.band == band
    assert (verdict.level, verdict.status) == OUTCOMES[band]


def test_the_rest_of_the_table() -> None:
    c = conventions()
    assert c.components == ("SYSTEM", "BOOTSTRAP", "CACHE", "MEMORY", "FAMILY", "ROUTING", "TEMPLATE", "API", "PERF",
                            "SECURITY")
    assert set(c.statuses) == {"SUCCESS", "FAILURE", "DEGRADED", "TIMEOUT", "RETRY", "SKIPPED", "INFO"}
    assert c.slow_request_ms == 2000
    assert c.alerts == {"error_rate_percent_above": 5, "cache_hit_rate_percent_below": 70, "memory_mb_above": 100,
                        "response_time_ms_above": 200}
    assert (c.degradation.cache_hit_rate_below, c.breaker.failure_threshold, c.breaker.window_s,
            c.breaker.recovery_s) == (60, 3, 10, 30)
    assert [(t.source, t.target, t.level, t.status, t.message) for t in c.breaker.transitions.values()] == TRANSITIONS
    for _, _, level, status, _ in TRANSITIONS:
        assert c.level_for_status(status) == level  # the status of each row implies its level


def data() -> dict:
    with PATH.open("rb") as file:
        return tomllib.load(file)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.pop("statuses"), "statuses"),
        (lambda d: d["bands"]["bootstrap"].update(acceptable_max=200), "bands.bootstrap."),
        (lambda d: d["bands"]["memory"].update(better="sideways"), "bands.memory.better"),
        (lambda d: d["statuses"].update(SUCCESS="LOUD"), "statuses.SUCCESS"),
        (lambda d: d["breaker"].update(window_s="ten"), "breaker.window_s"),
        (lambda d: d["breaker"].update(failure_threshold=2.5), "breaker.failure_threshold"),
        (lambda d: d["breaker"]["transitions"]["opened"].update(to="AJAR"), "breaker.transitions.opened."),
        (lambda d: d["alerts"].update(memory_mb_above=-1), "alerts.memory_mb_above"),
        (lambda d: d.update(components=["lower"]), "components"),
    ],
)
def test_a_bad_file_fails_with_the_path_and_the_offending_key(mutate, key: str) -> None:  # type: ignore[no-untyped-def]
    broken = data()
    mutate(broken)
    with pytest.raises(ConventionsError) as info:
        load(broken, source="/etc/qm/conventions.toml")
    assert str(info.value).startswith("/etc/qm/conventions.toml: ")
    assert key in str(info.value)


def test_an_override_file_changes_only_what_it_names(tmp_path: Path) -> None:
    override = tmp_path / "ours.toml"
    override.write_text("[bands.response_time]\noptimal_below = 20\n\n[breaker]\nrecovery_s = 5\n")
    merged = load_with_overrides(str(override))
    assert merged.classify("response_time", 30).band == "acceptable"
    assert merged.bands["response_time"].warning == 200  # untouched
    assert merged.breaker.recovery_s == 5
    assert merged.breaker.failure_threshold == 3
    bad = tmp_path / "bad.toml"
    bad.write_text("[bands.response_time]\noptimal_below = 150\n")  # now above acceptable_max
    with pytest.raises(ConventionsError, match=r"bad\.toml .*bands\.response_time"):
        load_with_overrides(str(bad))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("[breakr]\nwindow_s = 5\n", "unknown key breakr; did you mean breaker?"),
        ("[breaker]\nwindow = 5\n", "unknown key breaker.window; did you mean breaker.window_s?"),
        ("[bands.memory]\noptimal_bellow = 40\n", "unknown key bands.memory.optimal_bellow; did you mean "
                                                  "bands.memory.optimal_below?"),
        ("[alerts]\nmemory_above = 90\n", "unknown key alerts.memory_above; did you mean alerts.memory_mb_above?"),
        ("[breaker]\nwindow_s = \"10\"\n", 'key breaker.window_s has the string "10"; expected a number'),
        ("[breaker]\nwindow_s = true\n", "key breaker.window_s has the boolean true; expected a number"),
        ("[requests]\nslow_ms = -5\n", "key requests.slow_ms has the number -5; expected a positive number"),
        ("[degradation]\nwindow = [1]\n", "key degradation.window has an array of 1; expected a number"),
    ],
)
def test_every_bad_override_names_the_file_the_key_and_what_was_expected(
    tmp_path: Path, override: str, message: str
) -> None:
    path = tmp_path / "ours.toml"
    path.write_text(override)
    with pytest.raises(ConventionsError) as caught:
        load_with_overrides(str(path))
    assert str(caught.value).startswith(f"{path} (over conventions.toml): ")
    assert message in str(caught.value)
