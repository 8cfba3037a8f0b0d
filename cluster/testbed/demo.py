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


def write_demo(directory: Path, url: str, *, contacts: int = 5000, batch_size: int = 500) -> Path:
    """Write ``contacts.parquet`` and ``job.yaml`` into ``directory``; return the job path."""
    directory.mkdir(parents=True, exist_ok=True)
    write_audience(directory / "contacts.parquet", contacts)
    job = directory / "job.yaml"
    job.write_text(DEMO_JOB.format(contacts=contacts, batch_size=batch_size, url=url))
    return job
