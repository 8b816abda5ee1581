"""One alert rule, written once: its Prometheus/Loki form and the annotations promtool should see.

Summaries and descriptions are Python format strings over the alert's labels and ``value``
(``"{service_name}: {value} %"``). :meth:`Rule.as_dict` turns them into Go templates
(``{{ $labels.service_name }}``, ``{{ $value | printf "%.1f" }}``); :meth:`Rule.rendered` gives the
text Prometheus makes of them for given labels and value, which the promtool tests expect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Rule", "duration"]

_FIELD = re.compile(r"\{(\w+)\}")


def duration(seconds: float) -> str:
    """A Prometheus duration: ``90`` → ``"90s"``, ``60`` → ``"1m"``, ``7200`` → ``"2h"``, ``0`` → ``"0s"``."""
    whole = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


@dataclass(frozen=True)
class Rule:
    """An alerting rule; ``anchor`` is its section of docs/runbooks.md (the alert name, lower case)."""

    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    value_format: str = ".1f"

    @property
    def anchor(self) -> str:
        return self.alert.lower()

    def _template(self, text: str) -> str:
        def field(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "value":
                return f'{{{{ $value | printf "%{self.value_format}" }}}}'
            return f"{{{{ $labels.{name} }}}}"

        return _FIELD.sub(field, text)

    def as_dict(self, runbooks: str) -> dict[str, Any]:
        """The rule as the rule file holds it; ``runbooks`` is the base URL of docs/runbooks.md."""
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self._template(self.summary),
                "description": self._template(self.description),
                "runbook_url": f"{runbooks}#{self.anchor}",
            },
        }

    def rendered(self, runbooks: str, labels: dict[str, str], value: float) -> dict[str, Any]:
        """The alert Prometheus raises for ``labels`` at ``value``: promtool's ``exp_labels``/``exp_annotations``."""
        fields = {**labels, "value": format(value, self.value_format)}
        return {
            "exp_labels": {"severity": self.severity, **labels},
            "exp_annotations": {
                "summary": self.summary.format(**fields),
                "description": self.description.format(**fields),
                "runbook_url": f"{runbooks}#{self.anchor}",
            },
        }
