"""The quick start: a sample audience and a job file that broadcasts it to a local receiver."""

from __future__ import annotations

from pathlib import Path

from hookcast.cluster.testbed.synth import write_audience

DEMO_JOB = """\
# A hookcast job: {contacts} synthetic contacts, {batch_size} per request, to a local receiver.
name: demo
webhook:
  url: {url}
  timeout_s: 10
  signing:                      # Standard Webhooks signatures; the receiver verifies them
    secret: "${{{secret_env}}}"
payload:
  contact: true
  identities: [wechat.openId, wechat.unionId]
  custom: {{a1: "1", a2: "2"}}
audience:
  source: contacts.parquet
  where: "isAnonymous = false"
batch_size: {batch_size}
rate_limit:
  max_in_flight: 8
"""


SECRET_ENV = "HOOKCAST_DEMO_SIGNING_SECRET"


def write_demo(directory: Path, url: str, *, contacts: int = 5000, batch_size: int = 500) -> Path:
    """Write ``contacts.parquet`` and ``job.yaml`` into ``directory``; return the job path.
    The job signs with the secret in ``$HOOKCAST_DEMO_SIGNING_SECRET``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_audience(directory / "contacts.parquet", contacts)
    job = directory / "job.yaml"
    text = DEMO_JOB.format(contacts=contacts, batch_size=batch_size, url=url, secret_env=SECRET_ENV)
    job.write_text(text)
    return job
