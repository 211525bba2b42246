"""The systemd units in deploy/systemd/ are valid and say what the README
promises.

Each unit is checked by `systemd-analyze verify` the way systemd would load
an instance of it (pipeline-deal-worker@test.service, from a unit folder of
its own), alone and with the secrets.conf drop-in.  verify insists that
ExecStart's program exists, so the copy points ExecStart at the program of
this build; the installed path stays /usr/local/bin/<program>.  verify
reports unknown keys and bad values as warnings and still exits 0, so any
output line about our units is a failure; a broken copy is checked the same
way to prove the check notices.  The settings the README promises
(Restart=on-failure, the environment file, SIGTERM with a stop timeout above
the worker's own shutdown time, the sandboxing) are checked in the files,
and example.env against the settings table in common/config.c.

No services needed.
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("PL_BUILD_DIR") or os.path.join(SOURCE, "build")
UNITS = os.path.join(SOURCE, "deploy", "systemd")
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"

PROGRAMS = {
    "pipeline-deal-worker@.service": "deal_worker",
    "pipeline-lead-worker@.service": "lead_worker",
}

SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}


def read(path):
    with open(path) as f:
        return f.read()


def parse_unit(text):
    """{(section, key): [values]} of a unit file (no line continuations
    are used in ours)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def seconds(text):
    """A systemd or pipeline duration ("45s", "10s", "2s", "1min") in s."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total, rest = 0.0, text.strip()
    for num, unit in re.findall(r"(\d+)\s*([a-z]*)", rest):
        total += int(num) * units[unit or "s"]
    return total


def config_default(key):
    """The default of a setting, from the table in common/config.c."""
    src = read(os.path.join(SOURCE, "common", "config.c"))
    m = re.search(r'\{"%s",\s*"PL_[A-Z_]+",\s*T_[A-Z]+,\s*"([^"]*)"'
                  % re.escape(key), src)
    if not m:
        raise AssertionError("setting %s not found in common/config.c" % key)
    return m.group(1)


class SystemdUnits(unittest.TestCase):
    def setUp(self):
        self.assertTrue(os.access(ANALYZE, os.X_OK),
                        "systemd-analyze is needed (Debian package systemd)")
        self.tmp = tempfile.mkdtemp(prefix="pl-units-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def verify(self, template, text, dropin=None):
        """Install text as template (+ an optional drop-in) in a unit
        folder of its own and verify the instance @test.  Returns the lines
        of output that concern our files."""
        folder = tempfile.mkdtemp(dir=self.tmp)
        with open(os.path.join(folder, template), "w") as f:
            f.write(text)
        if dropin:
            d = os.path.join(folder, template + ".d")
            os.makedirs(d)
            shutil.copy(dropin, d)
        instance = template.replace("@.", "@test.")
        env = dict(os.environ, SYSTEMD_UNIT_PATH=folder + ":",
                   SYSTEMD_LOG_COLOR="0")
        p = subprocess.run([ANALYZE, "verify", "--man=no", instance],
                           capture_output=True, text=True, env=env,
                           timeout=60)
        out = (p.stdout + p.stderr).splitlines()
        mine = [l for l in out if folder in l or template.split("@")[0] in l]
        if p.returncode != 0 and not mine:
            mine = out or ["systemd-analyze exited %d" % p.returncode]
        return mine

    def runnable_copy(self, name):
        """The unit with ExecStart pointing at this build's program."""
        text = read(os.path.join(UNITS, name))
        program = os.path.join(BUILD, PROGRAMS[name])
        self.assertTrue(os.access(program, os.X_OK),
                        "%s not built" % program)
        installed = "ExecStart=/usr/local/bin/%s\n" % PROGRAMS[name]
        self.assertIn(installed, text)
        return text.replace(installed, "ExecStart=%s\n" % program)

    def test_the_units_are_the_two_workers(self):
        found = sorted(f for f in os.listdir(UNITS) if f.endswith(".service"))
        self.assertEqual(found, sorted(PROGRAMS))

    def test_verify_is_clean(self):
        for name in PROGRAMS:
            with self.subTest(unit=name):
                text = self.runnable_copy(name)
                self.assertEqual(self.verify(name, text), [])
                self.assertEqual(self.verify(
                    name, text, os.path.join(UNITS, "secrets.conf")), [])

    def test_verify_notices_a_broken_unit(self):
        """The check above can fail: an unknown key, a bad value, a bad
        drop-in and a missing program are each reported."""
        name = "pipeline-deal-worker@.service"
        text = self.runnable_copy(name)
        self.assertTrue(self.verify(name, text.replace(
            "[Service]\n", "[Service]\nRestartt=on-failure\n")))
        self.assertTrue(self.verify(name, text.replace(
            "ProtectSystem=strict", "ProtectSystem=stricter")))
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write("[Service]\nLoadCredentials=x:/y\n")
        self.assertTrue(self.verify(name, text, bad))
        self.assertTrue(self.verify(
            name, read(os.path.join(UNITS, name)).replace(
                "/usr/local/bin/", "/nonexistent/")))

    def test_what_the_readme_promises(self):
        grace = seconds(config_default("shutdown.grace"))
        delay = seconds(config_default("offsets.store.delay"))
        # deliveries + store delay + commit + librdkafka's teardown (~10 s)
        worst = grace + delay + grace + 10
        for name, program in PROGRAMS.items():
            with self.subTest(unit=name):
                u = parse_unit(read(os.path.join(UNITS, name)))
                s = lambda k: u.get(("Service", k), [None])[-1]
                self.assertEqual(s("ExecStart"),
                                 "/usr/local/bin/" + program)
                self.assertEqual(s("EnvironmentFile"),
                                 "/etc/sales-pipeline/%i.env")
                self.assertEqual(s("Restart"), "on-failure")
                self.assertGreater(seconds(s("RestartSec")), 0)
                self.assertEqual(s("KillSignal"), "SIGTERM")
                self.assertGreater(seconds(s("TimeoutStopSec")), worst)
                self.assertTrue(s("DynamicUser") == "yes" or s("User"))
                for key, want in SANDBOX.items():
                    self.assertEqual(s(key), want, key)
                self.assertIn("@system-service",
                              u.get(("Service", "SystemCallFilter"), []))
                self.assertEqual(u.get(("Install", "WantedBy")),
                                 ["multi-user.target"])

    def test_secrets_dropin(self):
        u = parse_unit(read(os.path.join(UNITS, "secrets.conf")))
        creds = u.get(("Service", "LoadCredential"), [])
        self.assertIn("redis-password:/etc/sales-pipeline/%i.redis-password",
                      creds)
        self.assertIn("PL_REDIS_PASSWORD_FILE=%d/redis-password",
                      u.get(("Service", "Environment"), []))

    def test_example_env(self):
        """Every setting with an environment variable is in example.env
        (set or commented out), except the plain passwords, which must not
        be; every line is a comment or KEY=value."""
        src = read(os.path.join(SOURCE, "common", "config.c"))
        table = set(re.findall(r'\{"[a-z.]+",\s*"(PL_[A-Z_]+)"', src))
        self.assertIn("PL_BROKERS", table)
        text = read(os.path.join(UNITS, "example.env"))
        set_vars = set()
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = re.fullmatch(r"(PL_[A-Z_]+)=(\S*)", line)
            self.assertTrue(m, "not KEY=value: %r" % line)
            set_vars.add(m.group(1))
        mentioned = set(re.findall(r"\b(PL_[A-Z_]+)=", text))
        mentioned |= set(re.findall(r"\b(PL_[A-Z_]+)=", read(
            os.path.join(UNITS, "secrets.conf"))))
        secrets = {"PL_REDIS_PASSWORD", "PL_SASL_PASSWORD"}
        self.assertEqual(sorted(table - secrets - mentioned), [])
        self.assertEqual(sorted(set_vars & secrets), [])
        self.assertEqual(sorted(set_vars - table - {"PL_CONFIG"}), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
