"""Hypothesis settings of the property tests that go through the API (tests/api).

Bounded and reproducible: a fixed number of examples, the same ones on every run (derandomize,
no example database), no deadline (requests to a real database vary in time). No shrinking: a
failure is reported with the example drawn, and shrinking through the database costs minutes.
The per-test fixtures (client, factory) are shared by a test's examples on purpose; each example
makes rows of its own.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

API_PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
