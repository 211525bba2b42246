"""docs/EVENTS.md, the event reference, says what the sources of truth say.

Checked against schemas/*.avsc and schemas/ids.tsv (what the codec reads):
every event type has a section whose field table lists exactly the schema's
fields, each with its Avro type and whether it is optional; the event index
has every type with its schema id, file and topic; the doc names no event
type that has no schema; the reason codes are those the schemas list.

Checked against deploy/rules/default.yaml (what the workers load): the
stage table (stages in order, probability, stale threshold as written in
the file, requirements), the transitions, the alert settings, and the lead
scoring criteria with their points, the MQL threshold and the disqualify
rules.

Each check is also run on a doctored copy of the doc (a field removed, a
probability changed...) to show that it fails.  Standard library only: the
rules file is read by a small parser for the YAML subset it uses.
"""
import glob
import json
import os
import re
import unittest

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(SOURCE, "docs", "EVENTS.md")
SCHEMAS = os.path.join(SOURCE, "schemas")
RULES = os.path.join(SOURCE, "deploy", "rules", "default.yaml")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------ mini YAML

def _strip_comment(line):
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _scalar(s):
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    return s


def _split_flow(s):
    """Split the inside of [..] or {..} at top-level commas."""
    parts, depth, quote, cur = [], 0, None, ""
    for c in s:
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += c
    if cur.strip():
        parts.append(cur)
    return parts


def _value(s):
    s = s.strip()
    if s.startswith("["):
        return [_value(p) for p in _split_flow(s[1:-1])]
    if s.startswith("{"):
        out = {}
        for p in _split_flow(s[1:-1]):
            k, _, v = p.partition(":")
            out[_scalar(k)] = _value(v)
        return out
    return _scalar(s) if s else None


def yaml_load(text):
    """Mappings, block sequences, flow [..] and {..}, scalars as strings:
    the subset deploy/rules/*.yaml use."""
    lines = []
    for raw in text.splitlines():
        line = _strip_comment(raw).rstrip()
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))

    def block(i, indent):
        if lines[i][1].startswith("- ") or lines[i][1] == "-":
            seq = []
            while i < len(lines) and lines[i][0] == indent and \
                    lines[i][1].startswith("-"):
                rest = lines[i][1][1:].strip()
                if re.match(r"^[A-Za-z_][\w.]*:(\s|$)", rest):
                    # a mapping item: its first key is on the dash line
                    lines[i] = (indent + 2, rest)
                    item, i = block(i, indent + 2)
                    seq.append(item)
                else:
                    seq.append(_value(rest))
                    i += 1
            return seq, i
        mapping = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            i += 1
            if rest.strip():
                mapping[_scalar(key)] = _value(rest)
            elif i < len(lines) and lines[i][0] > indent:
                mapping[_scalar(key)], i = block(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and \
                    lines[i][1].startswith("-"):
                mapping[_scalar(key)], i = block(i, indent)
            else:
                mapping[_scalar(key)] = None
        return mapping, i

    value, end = block(0, lines[0][0])
    if end != len(lines):
        raise ValueError("yaml: unparsed from line %r" % (lines[end],))
    return value


# ------------------------------------------------------------ the doc

def tables_after(doc, heading_re):
    """The rows (lists of cells) of the first table after the first heading
    matching heading_re, before the next heading of the same or higher
    level."""
    m = re.search(heading_re, doc, re.M)
    if not m:
        return None
    level = len(re.match(r"#+", m.group(0)).group(0))
    rest = doc[m.end():]
    stop = re.search(r"^#{1,%d} " % level, rest, re.M)
    if stop:
        rest = rest[:stop.start()]
    rows = []
    for line in rest.splitlines():
        line = line.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            rows.append(cells)
        elif rows:
            break
    return rows[1:] if rows else []  # without the header


def code(cell):
    """The first `code` span of a cell, or the cell."""
    m = re.search(r"`([^`]*)`", cell)
    return m.group(1) if m else cell


def codes(cell):
    return re.findall(r"`([^`]*)`", cell)


def event_sections(doc):
    """{type: field rows} for every '### `a.b`' section."""
    out = {}
    for m in re.finditer(r"^### `([a-z]+\.[a-z_]+)`\s*$", doc, re.M):
        out[m.group(1)] = tables_after(doc[m.start():],
                                       r"^### `%s`" % re.escape(m.group(1)))
    return out


# ------------------------------------------------------------ sources

def schemas():
    """{type: (id, file, schema)} from ids.tsv and the .avsc files."""
    out = {}
    for line in read(os.path.join(SCHEMAS, "ids.tsv")).splitlines():
        if line.strip() and not line.startswith("#"):
            i, t, f = line.split()
            out[t] = (int(i), f, json.loads(read(os.path.join(SCHEMAS, f))))
    return out


def avro_type(t):
    """How the doc writes a field's Avro type; and whether it is optional."""
    if isinstance(t, list):
        return avro_type([x for x in t if x != "null"][0])[0], "null" in t
    if isinstance(t, dict):
        if t.get("logicalType") == "decimal":
            return "decimal(%d,%d) bytes" % (t["precision"], t["scale"]), False
        if t.get("logicalType"):
            return "%s %s" % (t["type"], t["logicalType"]), False
        if t["type"] == "array":
            return "array of %s" % avro_type(t["items"])[0], False
    return t, False


# ------------------------------------------------------------ checks
# Each returns a list of problems (empty: the doc is right), so that a
# doctored doc can be shown to produce some.

def check_schemas(doc):
    problems = []
    sch = schemas()
    files = {os.path.basename(p) for p in glob.glob(
        os.path.join(SCHEMAS, "*.avsc"))}
    if files != {f for _, f, _ in sch.values()}:
        problems.append("ids.tsv and schemas/*.avsc differ: %s" % sorted(
            files ^ {f for _, f, _ in sch.values()}))
    sections = event_sections(doc)
    for t in sorted(set(sections) - set(sch)):
        problems.append("doc has a section for %s, which has no schema" % t)
    for t, (_, _, s) in sorted(sch.items()):
        rows = sections.get(t)
        if not rows:
            problems.append("no field table for %s" % t)
            continue
        documented = {code(r[0]): r for r in rows}
        if len(documented) != len(rows):
            problems.append("%s: a field is listed twice" % t)
        names = [f["name"] for f in s["fields"]]
        for name in sorted(set(names) - set(documented)):
            problems.append("%s: field %s missing from the doc" % (t, name))
        for name in sorted(set(documented) - set(names)):
            problems.append("%s: doc lists %s, not in the schema" % (t, name))
        for f in s["fields"]:
            r = documented.get(f["name"])
            if not r:
                continue
            ty, optional = avro_type(f["type"])
            if len(r) < 3 or r[1] != ty:
                problems.append("%s.%s: Avro type %r, doc says %r" % (
                    t, f["name"], ty, r[1] if len(r) > 1 else None))
            want = "optional" if optional else "required"
            if len(r) < 3 or r[2] != want:
                problems.append("%s.%s: should be %s" % (t, f["name"], want))
    # the index: every type with its id, file and topic; no other type
    index = tables_after(doc, r"^## Event index") or []
    listed = {code(r[0]): r for r in index}
    for t, (i, f, _) in sch.items():
        r = listed.get(t)
        if not r:
            problems.append("event index lacks %s" % t)
        elif r[1] != str(i) or code(r[2]) != "schemas/" + f:
            problems.append("event index: %s should be id %d, %s" % (t, i, f))
    for t in sorted(set(listed) - set(sch)):
        problems.append("event index lists %s, which has no schema" % t)
    # every type named in the doc (`a.b` spans) has a schema, except the
    # topic names
    topics = {"sales.leads", "sales.deals", "sales.pipeline", "sales.alerts",
              "sales.dlq"}
    for name in sorted(set(re.findall(r"`((?:lead|deal)\.[a-z_]+)`", doc))
                       - set(sch) - topics):
        problems.append("doc names event type %s, which has no schema"
                        % name)
    # the topics table puts every type on a topic
    topic_rows = tables_after(doc, r"^## Topics") or []
    on_topics = {c for r in topic_rows for c in codes(r[-1])}
    for t in sorted(set(sch) - on_topics):
        problems.append("topics table: %s is on no topic" % t)
    # reason codes: as the schemas list them
    want = set()
    for _, _, s in sch.values():
        for f in s["fields"]:
            if f["name"] == "reason_code":
                want |= set(re.findall(r"[a-z_]+", f["doc"].split(
                    "One of", 1)[1]))
    got = {code(r[0]) for r in tables_after(doc, r"^## Reason codes") or []}
    if not want or got != want:
        problems.append("reason codes: doc %s, schemas %s" % (
            sorted(got), sorted(want)))
    return problems


def check_rules(doc):
    problems = []
    rules = yaml_load(read(RULES))
    stages = rules["deal"]["stages"]
    transitions = {}
    for t in rules["deal"]["transitions"]:
        to = t["to"] if isinstance(t["to"], list) else [t["to"]]
        transitions[t["from"]] = set(to)

    rows = tables_after(doc, r"^### Deal stages") or []
    if [code(r[0]) for r in rows] != [s["name"] for s in stages]:
        problems.append("stage table: stages %s, rules %s" % (
            [code(r[0]) for r in rows], [s["name"] for s in stages]))
    for s, r in zip(stages, rows):
        name = s["name"]
        if len(r) < 4:
            problems.append("stage table: row of %s is short" % name)
            continue
        try:
            if abs(float(r[1]) - float(s["probability"])) > 1e-9:
                problems.append("%s: probability %s, rules %s" % (
                    name, r[1], s["probability"]))
        except ValueError:
            problems.append("%s: probability %r is no number" % (name, r[1]))
        if s.get("stale_after"):
            if r[2] != s["stale_after"]:
                problems.append("%s: stale after %s, rules %s" % (
                    name, r[2], s["stale_after"]))
        else:
            want = "terminal" if name not in transitions else "closed"
            if r[2] != want:
                problems.append("%s: stale after %r, should be %r" % (
                    name, r[2], want))
        if set(codes(r[3])) != set(s.get("requires") or []):
            problems.append("%s: requires %s, rules %s" % (
                name, codes(r[3]), s.get("requires")))

    rows = tables_after(doc, r"^### Transitions") or []
    got = {code(r[0]): set(codes(r[1])) for r in rows}
    for s in stages:
        want = transitions.get(s["name"], set())
        if got.get(s["name"]) != want:
            problems.append("transitions from %s: doc %s, rules %s" % (
                s["name"], sorted(got.get(s["name"], [])), sorted(want)))

    alerts = rules.get("alerts") or {}
    rows = tables_after(doc, r"^### Alerts") or []
    got = {code(r[0]): r[1] for r in rows}
    want = {
        "stale_repeat": alerts.get("stale_repeat"),
        "closing_soon": ", ".join(alerts.get("closing_soon") or []),
        "overdue_after": alerts.get("overdue_after"),
    }
    for k, v in (alerts.get("contract_not_sent") or {}).items():
        want["contract_not_sent." + k] = v
    if got != want:
        problems.append("alert settings: doc %s, rules %s" % (got, want))

    lead = rules["lead"]
    rows = tables_after(doc, r"^### Lead scoring") or []
    got = [(code(r[0]), r[-1]) for r in rows]
    want = [(c["name"], str(c["points"])) for c in lead["criteria"]]
    if got != want:
        problems.append("scoring criteria: doc %s, rules %s" % (got, want))
    if sum(int(c["points"]) for c in lead["criteria"]) != 100:
        problems.append("the rules' points do not add up to 100")
    m = re.search(r"MQL threshold \(`mql_score`\): (\d+)", doc)
    if not m or m.group(1) != str(lead["mql_score"]):
        problems.append("mql_score: doc %s, rules %s" % (
            m and m.group(1), lead["mql_score"]))
    for d in lead.get("disqualify") or []:
        if "`%s`" % d["name"] not in doc:
            problems.append("disqualify rule %s not in the doc" % d["name"])
    return problems


class EventsDoc(unittest.TestCase):
    def setUp(self):
        self.doc = read(DOC)

    def test_matches_the_schemas(self):
        self.assertEqual(check_schemas(self.doc), [])

    def test_matches_the_default_rules(self):
        self.assertEqual(check_rules(self.doc), [])

    def test_the_checks_can_fail(self):
        """Doctored copies of the doc are each caught."""
        doc = self.doc
        cases = [
            # a field removed from a table
            (check_schemas, lambda d: re.sub(
                r"^\| `idle_seconds` .*\n", "", d, count=1, flags=re.M)),
            # a field the schema does not have
            (check_schemas, lambda d: d.replace(
                "| `threshold_seconds` |",
                "| `threshold_minutes` | long | required | x |\n"
                "| `threshold_seconds` |", 1)),
            # optional written as required
            (check_schemas, lambda d: re.sub(
                r"(\| `lead_id` \| string \| )optional", r"\1required", d,
                count=1)),
            # an event type without a schema
            (check_schemas, lambda d: d + "\n### `deal.renamed`\n\n"
             "| field | Avro type | required | meaning |\n|---|---|---|---|\n"
             "| `deal_id` | string | required | x |\n"),
            (check_schemas, lambda d: d.replace("`unknown_stage` |",
                                                "`unknown_phase` |", 1)),
            # a wrong schema id in the index
            (check_schemas, lambda d: d.replace(
                "| 14 | `schemas/deal_stale.avsc`",
                "| 41 | `schemas/deal_stale.avsc`", 1)),
            (check_rules, lambda d: d.replace(
                "| `proposal` | 0.40 |", "| `proposal` | 0.45 |", 1)),
            (check_rules, lambda d: d.replace(
                "| `closing` | 0.80 | 1d |", "| `closing` | 0.80 | 24h |", 1)),
            (check_rules, lambda d: d.replace(
                "| `negotiation` | 0.60 | 10d | `amount` > 0, "
                "`expected_close_date` |",
                "| `negotiation` | 0.60 | 10d | `amount` > 0 |", 1)),
            (check_rules, lambda d: re.sub(
                r"^\| `scoping` \| 0\.20 .*\n", "", d, count=1, flags=re.M)),
            (check_rules, lambda d: d.replace(
                "| `lost` | `qualification` |",
                "| `lost` | `qualification`, `scoping` |", 1)),
            (check_rules, lambda d: re.sub(
                r"(\| `uses_hubspot` \|.*\| )15 \|", r"\g<1>20 |", d,
                count=1)),
            (check_rules, lambda d: d.replace(
                "| `contract_not_sent.after` | 24h |",
                "| `contract_not_sent.after` | 12h |", 1)),
        ]
        for i, (check, doctor) in enumerate(cases):
            with self.subTest(case=i):
                doctored = doctor(doc)
                self.assertNotEqual(doctored, doc, "case %d changed nothing"
                                    % i)
                self.assertNotEqual(check(doctored), [])

    def test_yaml_reader_reads_the_rules(self):
        rules = yaml_load(read(RULES))
        self.assertEqual(rules["deal"]["stages"][2],
                         {"name": "proposal", "probability": "0.40",
                          "stale_after": "14d", "requires": ["amount"]})
        self.assertEqual(rules["deal"]["transitions"][3],
                         {"from": "negotiation",
                          "to": ["closing", "proposal", "lost"]})
        self.assertEqual(rules["lead"]["criteria"][2]["any"][1],
                         {"field": "technologies", "op": "contains",
                          "value": "google_ads"})
        self.assertEqual(rules["alerts"]["contract_not_sent"]["after"], "24h")


if __name__ == "__main__":
    unittest.main(verbosity=2)
