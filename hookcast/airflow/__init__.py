"""hookcast's Airflow provider: ``HookcastOperator`` and the provider's description.

Airflow finds the provider through the ``apache_airflow_provider`` entry point, which calls
``get_provider_info()``. Nothing here imports Airflow: ``import hookcast`` (and this package)
works without it; ``HookcastOperator`` imports it when first asked for
(``pip install 'hookcast[airflow]'``).
"""

from __future__ import annotations

from typing import Any

from hookcast import __version__


def get_provider_info() -> dict[str, Any]:
    """The provider's description, in the form of Airflow's ``provider_info.schema.json``;
    ``package-name`` is the distribution's name, as Airflow requires."""
    return {
        "package-name": "hookcast",
        "name": "hookcast",
        "description": "Broadcast an audience in parquet to a webhook on Ray, from a DAG: "
        "locally on an embedded Ray or on a Ray cluster through its Jobs API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "hookcast",
                "external-doc-url": "https://pypi.org/project/hookcast/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {"integration-name": "hookcast", "python-modules": ["hookcast.airflow.operators"]}
        ],
    }


def __getattr__(name: str) -> object:
    if name == "HookcastOperator":
        try:
            from hookcast.airflow.operators import HookcastOperator
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith("airflow"):
                raise
            raise ModuleNotFoundError(
                "HookcastOperator needs Apache Airflow 3: pip install 'hookcast[airflow]'",
                name=exc.name,
            ) from exc
        return HookcastOperator
    raise AttributeError(f"module 'hookcast.airflow' has no attribute {name!r}")


__all__ = ["HookcastOperator", "get_provider_info"]
