"""Fixtures of the asset tests."""

import pytest
from dagster import DagsterInstance


@pytest.fixture
def instance():
    """A throwaway Dagster instance: runs, events and check results of one test."""
    with DagsterInstance.ephemeral() as inst:
        yield inst
