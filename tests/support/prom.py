"""Prometheus for the tests: a scrape parsed by prometheus_client, and a real Prometheus server scraping
a monitor."""

import json
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from support.net import free_port
from support.system import uniq

PROMETHEUS = "/usr/bin/prometheus"


def scrape(port, host="127.0.0.1"):
    """The text exposition of a metrics endpoint, parsed by prometheus_client's own parser:
    {(metric sample name, frozenset of label items): value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample_sum(samples, name, **labels):
    """The sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


class Prometheus:
    """The real prometheus (Debian's package) with a private config, TSDB in a temp dir, a free loopback
    port, scraping `targets` every second; query() is its HTTP API."""

    def __init__(self, tmp_path, targets, rules_text=None, config_text=None):
        self.dir = tmp_path / uniq("prom")
        self.dir.mkdir()
        self.port = free_port()
        rule_files = ""
        if rules_text is not None:
            (self.dir / "rules.yml").write_text(rules_text)
            rule_files = f"rule_files: [{str(self.dir / 'rules.yml')!r}]\n"
        scrape = textwrap.dedent(f"""\
            scrape_configs:
              - job_name: socket-snoop
                static_configs:
                  - targets: {json.dumps(list(targets))}
            """)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config_text if config_text is not None else
                               f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}{scrape}")
        self.proc = None
        self.targets = list(targets)

    def __enter__(self):
        self.log = open(self.dir / "prometheus.out", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "prometheus.out").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("prometheus never became ready: " + (self.dir / "prometheus.out").read_text())
        # its discovery hands targets to the scrapers about 5 s after start: wait for every first scrape
        if self.targets and self.wait_for("count(up == 1)", len(self.targets), timeout=40) != len(self.targets):
            raise AssertionError(f"prometheus never scraped {self.targets}: {self.api('targets')}")
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """An instant query: [(labels dict, float value)]."""
        return [(r["metric"], float(r["value"][1])) for r in self.api("query", query=expr)["result"]]

    def value(self, expr):
        """The one value of a query that returns one series (None: no series)."""
        res = self.query(expr)
        assert len(res) <= 1, res
        return res[0][1] if res else None

    def wait_for(self, expr, want, timeout=30):
        """Until the query's value equals `want`; returns the last value seen."""
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(0.5)
        return got
