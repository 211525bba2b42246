"""The Grafana dashboard (deploy/grafana/pipeline.json) queries only what
the workers export.  The exported series come from the worker programs
themselves (`deal_worker --metrics-names`, `lead_worker --metrics-names`,
which walk the same table as /metrics), the queried ones from every PromQL
expression of the dashboard: panel targets and template variable queries.
No services needed."""
import json
import os
import re
import subprocess
import unittest

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PL_BUILD_DIR") or os.path.join(SOURCE, "build")
DASHBOARD = os.path.join(SOURCE, "deploy", "grafana", "pipeline.json")

# PromQL words that look like identifiers but are not metric names.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
    "bottomk", "quantile", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "deriv",
    "histogram_quantile", "label_values", "label_replace", "label_join",
    "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max",
    "time", "vector", "scalar", "absent", "sort", "sort_desc",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "quantile_over_time", "changes",
    "resets", "predict_linear", "timestamp",
}


def exported_names():
    names = set()
    for program in ("deal_worker", "lead_worker"):
        p = subprocess.run([os.path.join(BUILD, program), "--metrics-names"],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError("%s --metrics-names: %s" % (program,
                                                             p.stderr))
        names |= {l.strip() for l in p.stdout.splitlines() if l.strip()}
    return names


def metric_names(expr):
    """Every metric name an expression selects: identifiers outside label
    matchers, strings, durations and grouping lists, minus PromQL's
    words; label_values(metric, label) counts its metric."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)     # strings
    e = re.sub(r"\{[^}]*\}", "", e)                     # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                    # range durations
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*"
               r"\([^)]*\)", r"\1", e)                  # label lists
    e = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1",
               e)                                       # its label argument
    e = re.sub(r"\$\{?\w+\}?", "", e)                   # $__rate_interval...
    names = set()
    for tok in re.findall(r"(?<![\w.])[a-zA-Z_:][\w:]*", e):
        if tok not in PROMQL_WORDS:
            names.add(tok)
    return names


def expressions(dash):
    """(where, expr) of every query in the dashboard."""
    out = []

    def walk_panels(panels):
        for p in panels:
            for t in p.get("targets", []):
                if "expr" in t:
                    out.append(("panel %r" % p.get("title"), t["expr"]))
            walk_panels(p.get("panels", []))  # rows
    walk_panels(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if q:
            out.append(("variable %r" % v.get("name"), q))
    return out


def unknown(dash, exported):
    """[(where, name)] of every queried metric that is not exported."""
    return [(where, n) for where, expr in expressions(dash)
            for n in sorted(metric_names(expr)) if n not in exported]


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as f:
            cls.dash = json.load(f)
        cls.exported = exported_names()

    def test_workers_export_names(self):
        # the names come from the binaries: a sanity floor, not a copy
        for n in ("pipeline_consumed_total", "pipeline_consumer_lag",
                  "pipeline_redis_apply_seconds_bucket",
                  "pipeline_alerts_total"):
            self.assertIn(n, self.exported)

    def test_every_queried_metric_is_exported(self):
        exprs = expressions(self.dash)
        self.assertGreater(len(exprs), 10)
        self.assertEqual(unknown(self.dash, self.exported), [])
        # every expression queries at least one metric of ours
        for where, expr in exprs:
            names = metric_names(expr)
            self.assertTrue(names, "%s: no metric in %r" % (where, expr))
            self.assertTrue(all(n.startswith("pipeline_") for n in names),
                            (where, names))

    def test_the_check_catches_a_wrong_name(self):
        bad = json.loads(json.dumps(self.dash))
        bad["panels"][0]["targets"][0]["expr"] = (
            'sum by (worker) (rate(pipeline_consumed{worker=~"$worker"}'
            '[$__rate_interval])) / on (worker) pipeline_lag_total')
        self.assertEqual(
            [n for _, n in unknown(bad, self.exported)],
            ["pipeline_consumed", "pipeline_lag_total"])

    def test_extractor(self):
        self.assertEqual(metric_names(
            'histogram_quantile(0.99, sum by (le, worker) (rate('
            'pipeline_redis_apply_seconds_bucket{worker=~"$worker",'
            'le!="x_total"}[$__rate_interval])))'),
            {"pipeline_redis_apply_seconds_bucket"})
        self.assertEqual(metric_names(
            "label_values(pipeline_consumed_total, worker)"),
            {"pipeline_consumed_total"})

    def test_panels_cover_the_issue(self):
        titles = " | ".join(p["title"] for p in self.dash["panels"]).lower()
        for word in ("throughput", "lag", "dead letters", "alerts",
                     "redis apply", "produce to delivery",
                     "timer due to alert"):
            self.assertIn(word, titles)
        quantiles = [e for _, e in expressions(self.dash)
                     if e.startswith("histogram_quantile(")]
        self.assertGreaterEqual(len(quantiles), 9)

    def test_datasource_is_a_variable(self):
        variables = {v["name"]: v for v in self.dash["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        ids = [p["id"] for p in self.dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for p in self.dash["panels"]:
            self.assertEqual(p["datasource"]["uid"], "${datasource}",
                             p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
