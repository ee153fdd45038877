"""Reading /metrics as Prometheus does, and the metric names a dashboard's PromQL asks for."""

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels) -> float:
        """The sample's value; 0 when the labelled series does not exist yet."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
        return 0.0

    def total(self, name: str) -> float:
        return sum(sample.value for sample in self.samples if sample.name == name)

    def has(self, name: str) -> bool:
        return any(sample.name == name for sample in self.samples)

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}


def scrape_url(base_url: str) -> Scrape:
    """A blocking scrape, for servers in another process."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        assert response.status == 200
        return Scrape(response.read().decode())


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
             "unless", "offset", "inf", "nan"}


def promql_metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, function names, keywords and numbers are taken out."""
    text = _STRINGS.sub('""', expression)
    text = _GRAFANA_VARIABLES.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPINGS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        before = text[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":
            continue  # the exponent or unit of a number (1e3, 5m)
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return names


_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,")


def dashboard_queries(dashboard: dict) -> list[tuple[str, set[str]]]:
    """Every query of a Grafana dashboard, with the metric names it needs."""
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            queries.append((target["expr"], promql_metric_names(target["expr"])))
    for variable in dashboard.get("templating", {}).get("list", ()):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query":
            queries.append((query, set(_LABEL_VALUES.findall(query))))
    return queries
