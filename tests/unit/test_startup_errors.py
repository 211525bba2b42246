"""A bad configuration stops a worker at start-up with one message that
names the key (or the rules file and line), before any connection is made.
No services needed: the worker must fail before it would reach them."""
import os
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PL_BUILD_DIR") or os.path.join(SOURCE, "build")
WORKERS = ["deal_worker", "lead_worker"]


def run(program, *args, env=None):
    e = dict(os.environ)
    # unreachable services: a worker that got past validation would hang
    e.update({"PL_BROKERS": "127.0.0.1:1", "PL_REDIS": "127.0.0.1:1"})
    e.update(env or {})
    return subprocess.run([os.path.join(BUILD, program)] + list(args),
                          capture_output=True, timeout=30, env=e, text=True)


class StartupErrors(unittest.TestCase):
    def expect_error(self, words, *args, env=None):
        for program in WORKERS:
            p = run(program, *args, env=env)
            self.assertNotEqual(p.returncode, 0, p.stderr)
            for w in words:
                self.assertIn(w, p.stderr)

    def test_bad_integer_names_the_key(self):
        self.expect_error(["batch.size", "PL_BATCH_SIZE", "abc"],
                          "--set", "batch.size=abc")

    def test_bad_value_from_the_environment(self):
        self.expect_error(["dedupe.ttl", "PL_DEDUPE_TTL", "7x"],
                          env={"PL_DEDUPE_TTL": "7x"})

    def test_unknown_key(self):
        self.expect_error(["batch.sise"], "--set", "batch.sise=5")

    def test_bad_librdkafka_property_names_the_key(self):
        self.expect_error(["kafka.no.such.property"],
                          "-X", "no.such.property=1")

    def test_braces_in_key_prefix(self):
        self.expect_error(["key.prefix", "braces"],
                          "--set", "key.prefix=a{b}")

    def test_bad_config_file_names_file_and_line(self):
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("# comment\nbatch.size = 10\nlog.level = loud\n")
            f.flush()
            self.expect_error([f.name + ":3", "log.level"], "--config", f.name)

    def test_bad_rules_file_names_file_and_line(self):
        bad = os.path.join(SOURCE, "tests", "unit", "rules",
                           "unknown_to_stage.yaml")
        line = [i for i, l in enumerate(open(bad), 1) if "to:" in l][0]
        self.expect_error(["%s:%d" % (bad, line), "unknown stage"],
                          "--set", "rules.file=" + bad)

    def test_missing_rules_file(self):
        self.expect_error(["/nonexistent/rules.yaml"],
                          "--set", "rules.file=/nonexistent/rules.yaml")

    def test_lead_worker_needs_a_lead_section(self):
        text = open(os.path.join(SOURCE, "deploy", "rules",
                                 "default.yaml")).read()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(text[:text.index("\nlead:")])
            f.flush()
            p = run("lead_worker", "--set", "rules.file=" + f.name)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("lead", p.stderr)
            self.assertIn(f.name, p.stderr)

    def test_help_lists_every_key(self):
        p = run("deal_worker", "--help")
        self.assertEqual(p.returncode, 0)
        for key in ["brokers", "redis", "key.prefix", "topic.deals",
                    "batch.size", "dedupe.ttl", "rules.file", "kafka."]:
            self.assertIn(key, p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2, testRunner=unittest.TextTestRunner(
        stream=sys.stdout, verbosity=2))
