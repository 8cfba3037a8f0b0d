"""The KubeRay manifests (deploy/kuberay/) and the image recipe (Dockerfile) keep our rules.

No Kubernetes and no Docker here: these read the files. They check what hookcast needs of
them (the job files load, secrets come from Secrets, one Ray version everywhere, the state
dir on a volume on the head, ports as KubeRay's head Service will publish them); KubeRay's
own schema was checked by hand against its CRDs, which are not kept in this repository.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tomllib
import typer.main
import yaml
from packaging.requirements import Requirement

import hookcast
from hookcast.actors.egress import EgressPolicy
from hookcast.actors.signing import new_secret
from hookcast.actors.sources import is_remote
from hookcast.cli.app import app
from hookcast.cluster.compile import compile_job, job_schedule

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kuberay"
RAYJOB, SCHEDULER, SECRETS = "rayjob.yaml", "raycluster-scheduler.yaml", "secrets.example.yaml"
RAY_UID, RAY_GID = 1000, 100  # the user `ray` of Ray's images
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRETISH = re.compile(r"SECRET|TOKEN|PASSWORD|KEY", re.IGNORECASE)
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# The ports KubeRay's head Service publishes are the head container's, by name.
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _one(name: str, kind: str) -> dict:
    (found,) = [d for d in _docs(name) if d["kind"] == kind]
    return found


def _cluster_spec(name: str) -> dict:
    if name == RAYJOB:
        return _one(RAYJOB, "RayJob")["spec"]["rayClusterSpec"]
    return _one(SCHEDULER, "RayCluster")["spec"]


def _pods(name: str) -> list[tuple[str, dict]]:
    """(group, pod spec) for the head and each worker group."""
    spec = _cluster_spec(name)
    pods = [("head", spec["headGroupSpec"]["template"]["spec"])]
    return pods + [(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]


def _head(name: str) -> dict:
    return _pods(name)[0][1]["containers"][0]  # KubeRay's Ray container is the first


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _mount_of(pod: dict, container: dict, **source: str) -> str:
    """The mount path of the volume whose source is ``source`` (configMap=NAME, ...)."""
    ((kind, wanted),) = source.items()
    key = "claimName" if kind == "persistentVolumeClaim" else "name"
    (volume,) = [v["name"] for v in pod["volumes"] if v.get(kind, {}).get(key) == wanted]
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return path


def _ray_version() -> str:
    (version,) = re.findall(r"^ARG RAY_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    return version


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _secret_keys() -> dict[str, str]:
    secret = _one(SECRETS, "Secret")
    assert "data" not in secret, "the example holds placeholders in stringData, nothing encoded"
    return secret["stringData"]


def _cluster_env() -> dict[str, str]:
    """The environment a head container gets, with working values for the Secret's keys."""
    env = {key: "test-value" for key in _secret_keys()}
    env["HOOKCAST_SIGNING_SECRET"] = new_secret()
    env["HOOKCAST_EGRESS"] = _env(_head(RAYJOB))["HOOKCAST_EGRESS"]["value"]
    return env


def _jobs(name: str) -> dict[str, str]:
    """The job files of the manifest's ConfigMap, by file name."""
    return _one(name, "ConfigMap")["data"]


def _options(*command: str) -> set[str]:
    """Every option name of a `hookcast` command, from the app itself."""
    found = typer.main.get_command(app)
    for word in command:
        found = found.commands[word]
    return {opt for param in found.params for opt in param.opts}


def test_the_image_is_rays_py311_image_of_the_ray_pyproject_pins() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert re.fullmatch(r"rayproject/ray:\$\{RAY_VERSION\}-py311(-cpu)?(-aarch64)?", base)
    (ray,) = [Requirement(r) for r in _pyproject()["project"]["dependencies"] if r[:4] == "ray["]
    assert ray.specifier.contains(_ray_version()), (_ray_version(), str(ray.specifier))
    assert re.search(r'echo "ray==\$\{RAY_VERSION\}" > (\S+).*--constraint \1', dockerfile, re.S)
    install = re.search(r"pip install ([^\n]*)", dockerfile)
    assert install and " -e " not in f" {install.group(1)} ", "a regular install, not editable"


def test_the_image_runs_as_rays_unprivileged_user() -> None:
    users = re.findall(r"^USER (\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert users and users[-1] in {"ray", str(RAY_UID), f"{RAY_UID}:{RAY_GID}"}


def test_the_build_context_holds_the_package_folders_and_nothing_else() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    needed = {"pyproject.toml", _pyproject()["project"]["readme"]}
    needed |= {folder.split("/")[0] for folder in setuptools["package-dir"].values()}
    copied = set()
    for line in re.findall(r"^COPY (.+)$", (ROOT / "Dockerfile").read_text(), re.M):
        copied |= {word for word in line.split()[:-1] if not word.startswith("--")}
    assert copied == needed
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*", "an allow-list: everything else stays out of the build context"
    assert {r[1:].rstrip("/") for r in rules if r.startswith("!")} == needed


def test_every_manifest_is_a_named_kubernetes_resource_of_the_expected_kind() -> None:
    kinds = {
        RAYJOB: ["ConfigMap", "RayJob"],
        SCHEDULER: ["PersistentVolumeClaim", "ConfigMap", "RayCluster"],
        SECRETS: ["Secret"],
    }
    assert sorted(p.name for p in DEPLOY.glob("*.yaml")) == sorted(kinds)
    for name, expected in kinds.items():
        docs = _docs(name)
        assert [d["kind"] for d in docs] == expected
        for doc in docs:
            ray = doc["kind"].startswith("Ray")
            assert doc["apiVersion"] == ("ray.io/v1" if ray else "v1")
            assert DNS_1035.fullmatch(doc["metadata"]["name"])
    # KubeRay's limits: a RayJob's cluster is named after it with a suffix.
    assert len(_one(RAYJOB, "RayJob")["metadata"]["name"]) <= 47
    assert len(_one(SCHEDULER, "RayCluster")["metadata"]["name"]) <= 53


@pytest.mark.parametrize("name", [RAYJOB, SCHEDULER])
def test_every_pod_runs_the_hookcast_image_of_one_ray_version(name: str) -> None:
    version = _pyproject()["project"]["version"]
    assert _cluster_spec(name)["rayVersion"] == _ray_version()
    for group, pod in _pods(name):
        (container,) = pod["containers"]
        assert container["image"].endswith(f"/hookcast:{version}-ray{_ray_version()}"), group
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == RAY_UID


@pytest.mark.parametrize("name", [RAYJOB, SCHEDULER])
def test_the_cluster_has_the_fields_kuberay_requires_and_a_fixed_size(name: str) -> None:
    spec = _cluster_spec(name)
    assert spec["authOptions"] == {"mode": "token"}
    assert not spec.get("enableInTreeAutoscaling"), "zero-CPU senders never ask for nodes"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "senders go to the workers"
    assert head["template"]["spec"]["containers"]
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and group["template"]["spec"]["containers"]
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"] > 0
    for params in [
        head["rayStartParams"],
        *(g["rayStartParams"] for g in spec["workerGroupSpecs"]),
    ]:
        assert all(isinstance(v, str) for v in params.values()), "rayStartParams are strings"


@pytest.mark.parametrize("name", [RAYJOB, SCHEDULER])
def test_every_secret_comes_from_the_secret_through_secret_key_refs(name: str) -> None:
    secret = _one(SECRETS, "Secret")["metadata"]["name"]
    named = {ref for text in _jobs(name).values() for ref in ENV_REF.findall(text)}
    head_env = _env(_head(name))
    assert named <= set(head_env), "every ${NAME} of the jobs is set where jobs are loaded"
    for group, pod in _pods(name):
        (container,) = pod["containers"]
        assert "envFrom" not in container
        for var, entry in _env(container).items():
            if var in named or SECRETISH.search(var):
                assert "value" not in entry, f"{group}: {var} is written into the manifest"
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret and ref["key"] in _secret_keys(), (group, var)
            else:
                assert "whsec_" not in str(entry.get("value", "")), (group, var)


def test_the_secret_example_holds_placeholders_the_jobs_refuse() -> None:
    placeholders = _secret_keys()
    assert all(value.startswith("REPLACE_ME") for value in placeholders.values())
    for name in (RAYJOB, SCHEDULER):
        for file, text in _jobs(name).items():
            with pytest.raises(hookcast.JobError) as refused:
                hookcast.load_job_text(text, f"/jobs/{file}", env=placeholders)
            assert not any(value in str(refused.value) for value in placeholders.values())


@pytest.mark.parametrize("name", [RAYJOB, SCHEDULER])
def test_every_ray_container_guards_egress(name: str) -> None:
    for group, pod in _pods(name):
        (container,) = pod["containers"]
        env = {"HOOKCAST_EGRESS": _env(container)["HOOKCAST_EGRESS"]["value"]}
        assert EgressPolicy.from_env(env=env).public_only, group


@pytest.mark.parametrize("name", [RAYJOB, SCHEDULER])
def test_the_head_publishes_the_ports_hookcast_and_kuberay_use(name: str) -> None:
    head = _cluster_spec(name)["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in _head(name)["ports"]}
    assert ports == HEAD_PORTS
    overrides = {"port", "dashboard-port", "ray-client-server-port", "metrics-export-port"}
    assert not overrides & set(head["rayStartParams"]), "the ports above are Ray's defaults"
    if name == SCHEDULER:  # the addresses its comments give `hookcast submit`
        cluster = _one(SCHEDULER, "RayCluster")["metadata"]["name"]
        shown = re.findall(r"([a-z0-9-]+-head-svc)[: ](\d+)", (DEPLOY / name).read_text())
        assert shown and set(shown) == {(f"{cluster}-head-svc", str(ports["dashboard"]))}


def test_the_rayjob_runs_its_configmap_job_on_the_cluster_it_is_in() -> None:
    job = _one(RAYJOB, "RayJob")["spec"]
    entrypoint = job["entrypoint"]
    assert not re.search(r"[\"'`$;&|<>\\]", entrypoint), "passed through a shell by KubeRay"
    command, subcommand, path, *options = shlex.split(entrypoint)
    assert (command, subcommand) == ("hookcast", "run")
    # RAY_ADDRESS (set by the Jobs API) joins the cluster: no --address, no embedded Ray.
    assert set(options) <= _options("run") - {"--address", "--state-dir"}
    pod = _pods(RAYJOB)[0][1]
    mount = _mount_of(pod, _head(RAYJOB), configMap=_one(RAYJOB, "ConfigMap")["metadata"]["name"])
    assert Path(path).parent == Path(mount) and Path(path).name in _jobs(RAYJOB)
    # Without entrypoint resources the driver runs on the head, where the mounts are.
    assert not {"entrypointNumCpus", "entrypointNumGpus", "entrypointResources"} & set(job)
    assert job["submissionMode"] == "K8sJobMode"


def test_the_rayjob_job_file_is_a_valid_job_to_send_now() -> None:
    (text,) = _jobs(RAYJOB).values()
    loaded = hookcast.load_job_text(text, "/jobs/job.yaml", env=_cluster_env())
    assert compile_job(loaded).endpoint == loaded.spec.webhook.url
    assert job_schedule(loaded, now=None).kind == "immediate"
    assert is_remote(loaded.source), "the segment actor may land on any node"
    assert _one(RAYJOB, "RayJob")["spec"]["metadata"]["hookcast_job"] == loaded.spec.name


def test_the_rayjob_deletes_its_cluster_and_never_retries() -> None:
    job = _one(RAYJOB, "RayJob")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert isinstance(job["ttlSecondsAfterFinished"], int) and job["ttlSecondsAfterFinished"] > 0
    # A retry is a new cluster with an empty ledger: everything again, under new keys.
    assert job.get("backoffLimit", 0) == 0
    assert "deletionStrategy" not in job, "exclusive with shutdownAfterJobFinishes"


def test_the_scheduler_keeps_its_state_dir_on_a_volume_on_the_head() -> None:
    (_, head_pod), *workers = _pods(SCHEDULER)
    claim = _one(SCHEDULER, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], "SQLite WAL: a block volume"
    mount = _mount_of(head_pod, _head(SCHEDULER), persistentVolumeClaim=claim["metadata"]["name"])
    assert _env(_head(SCHEDULER))["HOOKCAST_HOME"]["value"] == mount
    assert head_pod["securityContext"]["fsGroup"] == RAY_GID, "writable by Ray's user"
    for group, pod in workers:
        volumes = pod.get("volumes", [])
        assert not any("persistentVolumeClaim" in v for v in volumes), group


def test_the_scheduled_jobs_are_valid_and_will_fire() -> None:
    now = datetime(2027, 1, 4, tzinfo=UTC)
    jobs = _jobs(SCHEDULER)
    for file, text in jobs.items():
        loaded = hookcast.load_job_text(text, f"/jobs/{file}", env=_cluster_env())
        assert job_schedule(loaded, now=now).kind != "immediate", file
        assert is_remote(loaded.source), file
    pod = _pods(SCHEDULER)[0][1]
    mount = _mount_of(
        pod, _head(SCHEDULER), configMap=_one(SCHEDULER, "ConfigMap")["metadata"]["name"]
    )
    shown = re.findall(r"hookcast schedule add (/\S+\.yaml)", (DEPLOY / SCHEDULER).read_text())
    assert shown and all(Path(p).parent == Path(mount) and Path(p).name in jobs for p in shown)


def _post_start(tmp_path: Path, fails: int) -> tuple[int, list[str]]:
    """Run the head's postStart script with `hookcast` failing ``fails`` times (exit 4, no
    cluster yet) and an instant `sleep`: its exit code and each call's arguments."""
    (script,) = _head(SCHEDULER)["lifecycle"]["postStart"]["exec"]["command"][2:]
    log = tmp_path / "start.log"
    assert "/tmp/hookcast-scheduler-start.log" in script
    script = script.replace("/tmp/hookcast-scheduler-start.log", str(log))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    stubs = {
        "hookcast": f'echo "$*" >> {calls}\n[ "$(wc -l < {calls})" -gt {fails} ] || exit 4\n',
        "sleep": "exit 0\n",
    }
    for command, body in stubs.items():
        stub = bin_dir / command
        stub.write_text("#!/bin/sh\n" + body)
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_ADDRESS": "127.0.0.1:6379"}
    done = subprocess.run(["/bin/bash", "-c", script], env=env, timeout=60, check=False)
    return done.returncode, calls.read_text().splitlines()


def test_the_head_starts_the_scheduler_once_ray_answers(tmp_path: Path) -> None:
    code, calls = _post_start(tmp_path, fails=3)
    assert code == 0
    assert calls == ["scheduler start --address 127.0.0.1:6379"] * 4
    assert "--address" in _options("scheduler", "start")


def test_the_head_restarts_when_the_scheduler_never_starts(tmp_path: Path) -> None:
    code, calls = _post_start(tmp_path, fails=1000)
    assert code != 0
    assert 1 < len(calls) <= 60, "a bounded number of tries"
