# hookcast on Ray's own image: the image of every pod in deploy/kuberay/ (head, workers and
# the RayJob's submitter), or of any other containerised Ray cluster.
#
#   docker build -t registry.example.com/hookcast:0.1.0-ray2.60.0 .
#
# The tag carries hookcast's version and Ray's: a Ray cluster needs the same Ray on every node
# and on its clients, so RAY_VERSION is the one pyproject.toml allows (ray[default]>=2.60,<2.61)
# and the manifests' rayVersion (tests/unit/test_kuberay_manifests.py holds all three equal).
ARG RAY_VERSION=2.60.0
# {Ray version}-py311: Python 3.11, the CPU image; append -aarch64 for ARM nodes.
FROM rayproject/ray:${RAY_VERSION}-py311
ARG RAY_VERSION

# Ray's images run as the unprivileged user `ray` (uid 1000, group users, gid 100); hookcast
# installs into that user's Python and runs as it.
USER ray

# Only the package sources and what pyproject.toml reads (.dockerignore keeps the rest out:
# no .git, .venv, tests or state dirs, whose ledgers hold job texts).
COPY --chown=ray:users pyproject.toml README.md /tmp/hookcast-src/
COPY --chown=ray:users hookcast /tmp/hookcast-src/hookcast
COPY --chown=ray:users actors /tmp/hookcast-src/actors
COPY --chown=ray:users cluster /tmp/hookcast-src/cluster
COPY --chown=ray:users cli /tmp/hookcast-src/cli

# A regular (not editable) install. The constraint keeps pip from replacing the image's Ray
# with another release; the checks fail the build on a mismatch or a broken entry point.
RUN echo "ray==${RAY_VERSION}" > /tmp/ray-constraint.txt \
    && python -m pip install --no-cache-dir --constraint /tmp/ray-constraint.txt /tmp/hookcast-src \
    && rm -rf /tmp/hookcast-src /tmp/ray-constraint.txt \
    && python -c "import ray, sys; sys.exit(ray.__version__ != '${RAY_VERSION}')" \
    && hookcast --help > /dev/null

# No usage telemetry leaves the cluster unless you set this to 1.
ENV RAY_USAGE_STATS_ENABLED=0

WORKDIR /home/ray
