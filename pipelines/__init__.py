"""carp: declarative compress-and-recover pipelines.

Importing this package stays cheap: torch, transformers, mlflow, prefect and
deepspeed are imported inside the functions that need them.
"""

__version__ = "0.1.0"
