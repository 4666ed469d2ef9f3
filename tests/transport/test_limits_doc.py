"""The limits the docs state are the code's defaults (docs/protocol.md, operations.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from sidecar.daemon.config import ADMISSION_KEYS, DaemonConfig, Limits, from_dict
from transport.admission import AdmissionLimits
from transport.limits import ServiceLimits

DOCS = Path(__file__).resolve().parents[2] / "docs"


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The first markdown table after ``heading``: first cell (backticks off) -> cells."""
    section = text[text.index(heading) :]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("| `"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def test_protocol_limits_table_is_service_limits_defaults() -> None:
    rows = table_rows((DOCS / "protocol.md").read_text(), "## Limits (")
    defaults = ServiceLimits()
    documented = {
        "max_frame_bytes",
        "max_in_flight_per_channel",
        "max_connections",
        "max_channels_per_connection",
        "submits_per_second",
        "submit_burst",
        "max_batch",
        "max_subscription_credit",
        "max_subscriptions_per_channel",
        "max_waiting_leases_per_connection",
        "max_lease_seconds",
        "max_wait_seconds",
    }
    assert set(rows) == documented
    for name in documented:
        cell = rows[name][0]
        assert cell.split()[0] == number(getattr(defaults, name)), (name, cell)


def test_protocol_admission_table_is_admission_defaults() -> None:
    rows = table_rows((DOCS / "protocol.md").read_text(), "### Connection admission")
    d = AdmissionLimits()
    assert rows["max_startups"][1] == str(d.max_startups)
    assert rows["per_source_max_startups"][1] == str(d.per_source_max_startups)
    assert rows["login_grace_seconds"][1] == number(d.login_grace_seconds)
    assert rows["refusal_log_seconds"][1] == number(d.refusal_log_seconds)
    p = d.penalties
    assert rows["penalties"][1] == (
        f"authfail:{p.authfail:g} noauth:{p.noauth:g} grace-exceeded:{p.grace_exceeded:g} "
        f"min:{p.min:g} max:{p.max:g}"
    )


def operations_example() -> dict[str, object]:
    text = (DOCS / "operations.md").read_text()
    block = re.search(r"## Config file reference.*?```toml\n(.*?)```", text, re.S)
    assert block is not None
    return tomllib.loads(block.group(1))


def test_operations_limits_and_admission_are_the_daemon_defaults() -> None:
    example = operations_example()
    assert example["limits"] == {k: getattr(Limits(), k) for k in Limits.__dataclass_fields__}
    admission = example["admission"]
    assert isinstance(admission, dict)
    assert set(admission) == set(ADMISSION_KEYS)
    parsed = from_dict({"admission": admission}, Path("/"))
    assert parsed.admission == DaemonConfig().admission == AdmissionLimits()
    # the daemon and the bare service agree on every limit they share
    service = ServiceLimits()
    assert Limits().max_connections == service.max_connections
    assert Limits().max_in_flight == service.max_in_flight_per_channel
    assert Limits().max_frame_bytes == service.max_frame_bytes


def test_operations_admission_table_names_every_key_beside_its_openssh_name() -> None:
    rows = table_rows((DOCS / "operations.md").read_text(), "## Connection admission")
    assert set(rows) == set(ADMISSION_KEYS)
    for key, openssh in ADMISSION_KEYS.items():
        if not openssh.startswith("("):
            assert rows[key][0] == f"`{openssh}`"
