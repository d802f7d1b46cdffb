"""Running the assets in-process and reading what their checks said.

Check outcomes are keyed by (asset, check name) so a test states exactly which
checks ran: an empty answer, or a check missing or added, fails the comparison.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from dagster import materialize

from heatmap_assets.assets import ALL_ASSETS
from heatmap_assets.resources import build_resources

# Written out rather than read from heatmap_assets.checks: the names are what analysts see in the UI.
_EVERY_TABLE = {"cells_within_grid", "no_duplicate_cells", "scroll_reach_within_views"}
CHECKS_OF = {
    "heatmap_hourly": {"raw_events_match_hourly", *_EVERY_TABLE},
    "heatmap_daily": {"hourly_sum_matches_daily", "hourly_scroll_matches_daily", *_EVERY_TABLE},
    "heatmap_weekly": {"daily_sum_matches_weekly", "daily_scroll_matches_weekly", *_EVERY_TABLE},
}


def run(settings, instance, selection, partition_key=None, tags=None):
    result = materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=partition_key,
        resources=build_resources(settings),
        instance=instance,
        tags=tags,
    )
    assert result.success
    return result


@dataclass(frozen=True)
class Outcome:
    passed: bool
    metadata: dict


def outcomes(evaluations) -> dict[tuple[str, str], Outcome]:
    """{(asset, check): Outcome} from a run's evaluations or from check results computed directly."""
    found = {}
    for e in evaluations:
        key = (e.asset_key.to_user_string(), e.check_name)
        assert key not in found, f"check {key} reported twice"
        found[key] = Outcome(e.passed, {name: value.value for name, value in e.metadata.items()})
    return found


def run_outcomes(result) -> dict[tuple[str, str], Outcome]:
    return outcomes(result.get_asset_check_evaluations())


def assert_passed(
    found: dict[tuple[str, str], Outcome], *assets: str, failed: AbstractSet[tuple[str, str]] = frozenset()
):
    """Exactly the checks of ``assets`` ran, and exactly ``failed`` of them failed."""
    expected = {(asset, name) for asset in assets for name in CHECKS_OF[asset]}
    assert set(found) == expected, found
    assert {key for key, outcome in found.items() if not outcome.passed} == set(failed), found
