"""`ray-cluster.yaml` against the cluster-config schema shipped inside the installed ray."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[2] / "ray-cluster.yaml"


def test_ray_cluster_yaml_validates_against_rays_schema() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["setup_commands"], "every node must install hookcast"
    assert any("hookcast" in command for command in config["setup_commands"])


def test_schema_check_catches_a_broken_config() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    config["max_workers"] = "many"
    with pytest.raises(Exception, match=r"max_workers|many"):
        validate_config(prepare_config(copy.deepcopy(config)))
