"""Prefect flows built from carp declarations (imports prefect: load lazily).

Prefect reads its settings when it is first imported, so the defaults carp needs
are set here, before ``flows.pipeline`` imports it: carp's log lines reach
Prefect's logs (also in served flow runs, which inherit the environment), a slow
first start of the temporary server is tolerated, and no analytics are sent.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "carp")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
