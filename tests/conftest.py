"""Test-suite wide settings.

Hypothesis runs derandomized (the same examples every run, no example database) and without
its timing health checks and deadlines: the suite must be deterministic, and wall-clock
limits on a shared 2-core machine only make tests flaky. Performance is measured in
benchmarks/, never asserted here.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "proxyota",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("proxyota")
