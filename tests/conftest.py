"""Session-wide test set-up: offline, quiet, toy kinds importable."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("CARP_PARENT_RUN_ID", None)

sys.path.insert(0, str(Path(__file__).parent))

from _toy import toy_kinds  # noqa: E402,F401  (fixture)
