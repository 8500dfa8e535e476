"""`socket-snoop service`: the unit and logrotate file, verified by systemd and logrotate; SIGHUP reopening."""

import io
import shlex
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import pytest
from socketsnoop.commands import service
from socketsnoop.settings.monitor import RunSettings
from socketsnoop.settings.sandbox import ENV as SANDBOX, conflict_line

from support.system import READY

ENV = dict(os.environ)



def cli(*args):
    return subprocess.run([sys.executable, "-m", "socketsnoop", "service", *args], capture_output=True, text=True,
                          env=ENV, timeout=60, cwd="/")


def dirs(tmp_path):
    return ["--unit-dir", str(tmp_path / "units"), "--logrotate-dir", str(tmp_path / "logrotate.d")]


def test_dry_run_prints_both_and_writes_nothing(tmp_path):
    r = cli("install", "--dry-run", *dirs(tmp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"# {tmp_path}/units/socket-snoop.service" in out and f"# {tmp_path}/logrotate.d/socket-snoop" in out
    exec_line = next(line for line in out.splitlines() if line.startswith("ExecStart="))
    argv = exec_line[len("ExecStart="):].split()
    assert os.path.isabs(argv[0]) and argv[-2:] == ["-q", "--no-report"]
    for line in ("Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/log", "PrivateTmp=yes", "ProtectKernelModules=yes",
                 "ProtectControlGroups=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
                 "SystemCallArchitectures=native", "RestrictAddressFamilies=AF_UNIX AF_NETLINK",
                 "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_SYS_PTRACE",
                 "WantedBy=multi-user.target", '"/var/log/socket_monitor.log" {', "    rotate 14",
                 "    compress", "    delaycompress", "    missingok", "    notifempty",
                 "    create 0640 root adm",
                 "        systemctl kill -s HUP socket-snoop.service >/dev/null 2>&1 || true"):
        assert line in out.splitlines(), line
    assert not any(line.strip() == "copytruncate" for line in out.splitlines())
    assert not (tmp_path / "units").exists()


def test_install_uninstall(tmp_path):
    r = cli("install", *dirs(tmp_path))
    assert r.returncode == 0, r.stderr
    unit, rot = tmp_path / "units" / "socket-snoop.service", tmp_path / "logrotate.d" / "socket-snoop"
    assert unit.is_file() and rot.is_file() and (unit.stat().st_mode & 0o777) == 0o644
    assert f"wrote {unit}" in r.stdout
    r = cli("uninstall", *dirs(tmp_path))
    assert r.returncode == 0 and f"removed {unit}" in r.stdout and f"removed {rot}" in r.stdout
    assert not unit.exists() and not rot.exists()
    r = cli("uninstall", *dirs(tmp_path))
    assert r.returncode == 0 and "nothing to remove" in r.stdout


def test_unwritable_dir_is_one_line(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("")
    r = cli("install", "--unit-dir", str(target / "sub"), "--logrotate-dir", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = cli("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_configured_log_file_is_rotated_and_writable(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('json = true\nlog-file = "/srv/logs/snoop.json"\n')
    r = cli("install", "--dry-run", "--config", str(conf), *dirs(tmp_path))
    assert r.returncode == 0, r.stderr
    assert '"/var/log/socket_monitor.log" "/srv/logs/snoop.json" {' in r.stdout
    assert "ReadWritePaths=/var/log -/srv/logs\n" in r.stdout  # '-': a missing directory does not stop the unit
    assert f"--config {conf} -q" in r.stdout
    conf.write_text("port = 99999\n")
    r = cli("install", "--dry-run", "--config", str(conf))
    assert r.returncode == 2 and "line 1: port" in r.stderr and "Traceback" not in r.stderr


def test_exec_quoting():
    assert service._quote("/opt/my tools/socket-snoop") == '"/opt/my tools/socket-snoop"'
    assert service._quote("/x/100%") == "/x/100%%"
    assert service._quote("-q") == "-q"
    assert service._quote("/x/$HOME") == "/x/$$HOME" and service._quote("/x/$HOME", exec_line=False) == "/x/$HOME"
    with pytest.raises(service.SnoopError, match="control or unprintable"):
        service._quote("/x\nExecStartPre=/bin/evil")  # a newline would start a directive


def test_read_write_paths_and_logrotate_quoting():
    text = service.render_unit(["/usr/bin/socket-snoop"], None, "/etc/my conf/c.toml",
                               ["/var/log/socket_monitor.log", "/var/log/sub/x.log", "/var/logs2/x.log",
                                "/srv/my logs/x.log", "/srv/a%b/x.log"])
    line = next(x for x in text.splitlines() if x.startswith("ReadWritePaths="))
    assert line == 'ReadWritePaths=/var/log -/srv/a%%b "-/srv/my logs" -/var/logs2'
    assert '--config "/etc/my conf/c.toml" -q --no-report' in text
    rot = service.render_logrotate(["/var/log/socket_monitor.log", "/srv/my logs/x.log"])
    assert '"/var/log/socket_monitor.log" "/srv/my logs/x.log" {' in rot.splitlines()
    for bad in ('/srv/a"b.log', "/srv/a\\b.log", "/srv/*.log", "/srv/a\nb.log", "/srv/{x}.log"):
        with pytest.raises(service.SnoopError, match="logrotate cannot name it"):
            service.render_logrotate([bad])


def test_log_path_with_a_space_installs_one_line_error_for_a_bad_one(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('log-file = "/srv/my logs/snoop.log"\n')
    r = cli("install", "--dry-run", "--config", str(conf), *dirs(tmp_path))
    assert r.returncode == 0, r.stderr
    assert '"/var/log/socket_monitor.log" "/srv/my logs/snoop.log" {' in r.stdout
    assert 'ReadWritePaths=/var/log "-/srv/my logs"\n' in r.stdout
    conf.write_text('log-file = "/srv/logs/*.log"\n')
    r = cli("install", "--dry-run", "--config", str(conf), *dirs(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "logrotate cannot name it" in r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_analyze_verify(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text(f'log-file = "{tmp_path}/no such dir/x.log"\n')  # a directory that is not there
    assert cli("install", "--config", str(conf), *dirs(tmp_path)).returncode == 0
    unit = tmp_path / "units" / "socket-snoop.service"
    assert f'"-{tmp_path}/no such dir"' in unit.read_text()
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "socket-snoop.service" not in r.stderr, r.stderr  # no warning about our unit


@pytest.mark.skipif(not shutil.which("logrotate"), reason="needs logrotate (apt-get install logrotate)")
def test_logrotate_accepts_and_rotates(tmp_path):
    (tmp_path / "my logs").mkdir()
    log = tmp_path / "my logs" / "x.log"  # a space in the path: quoted
    log.write_text("a line\n")
    conf = tmp_path / "rot.conf"
    conf.write_text(service.render_logrotate([str(log)]))
    state = tmp_path / "state"
    r = subprocess.run(["logrotate", "-d", "-s", str(state), str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr
    r = subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "my logs" / "x.log.1").read_text() == "a line\n"  # delaycompress: not yet compressed
    if os.geteuid() == 0:
        assert (log.stat().st_mode & 0o777) == 0o640


def test_the_units_nice_is_the_configs_priority_boost(tmp_path):
    """Nice= is the config's priority-boost, as the monitor run by hand sets it; 0: no Nice= line."""
    def unit(config_text):
        config = tmp_path / "c.toml"
        config.write_text(config_text)
        os.chmod(config, 0o600)
        p = cli("install", "--dry-run", "--config", str(config), *dirs(tmp_path))
        assert p.returncode == 0, p.stderr
        return [line for line in p.stdout.splitlines() if line.startswith("Nice=")]
    assert unit("") == ["Nice=-10"]
    assert unit("priority-boost = 4\n") == ["Nice=-4"]
    assert unit("priority-boost = 0\n") == []


def test_render_unit_from_source_tree_sets_pythonpath():
    text = service.render_unit(["/usr/bin/python3", "-m", "socketsnoop"], "/opt/src", None, ["/var/log/a.log"])
    assert "Environment=PYTHONPATH=/opt/src" in text and "ProtectHome=yes" in text
    text = service.render_unit(["/root/.venv/bin/socket-snoop"], None, None, ["/var/log/a.log"])
    assert "ProtectHome=read-only" in text and "Environment=PYTHONPATH" not in text


def test_main_dry_run_in_process(tmp_path):
    out = io.StringIO()
    opts = SimpleNamespace(action="uninstall", dry_run=True, unit_dir=str(tmp_path), logrotate_dir=str(tmp_path),
                           config=None)
    assert service.uninstall(opts, out) == 0 and out.getvalue() == "nothing to remove\n"


# -- the monitor follows a rotation on SIGHUP --------------------------------------------------------
def _wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _connect(port):
    c = socket.create_connection(("127.0.0.1", port))
    c.close()


@pytest.mark.bpf
def test_sighup_reopens_the_log(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    log = tmp_path / "x.log"
    mon = subprocess.Popen([sys.executable, "-m", "socketsnoop", "--log-file", str(log), "--no-report", "-q",
                            "-P", str(port), "--config", os.devnull],
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in mon.stderr:  # the banner comes after attach (or an error, and the end of stderr)
            if line.startswith(READY):
                break
        else:
            raise AssertionError("the monitor never became ready")
        marker = f"127.0.0.1:{port} "

        def lines(p):
            return [x for x in p.read_text().splitlines() if marker in x] if p.exists() else []

        _connect(port)
        srv.accept()[0].close()
        assert _wait_for(lambda: len(lines(log)) >= 2), "no lines before the rotation"
        rotated = tmp_path / "x.log.1"
        log.rename(rotated)
        before = len(lines(rotated))
        mon.send_signal(signal.SIGHUP)
        assert _wait_for(lambda: log.exists(), 2.0), "SIGHUP did not reopen the log"
        _connect(port)
        srv.accept()[0].close()
        assert _wait_for(lambda: len(lines(log)) >= 2), "no lines in the new log"
        time.sleep(0.3)
        assert len(lines(rotated)) == before, "lines still went to the rotated file"
        assert mon.poll() is None, mon.stderr.read()
    finally:
        mon.send_signal(signal.SIGINT)
        try:
            out, err = mon.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            mon.kill()
            out, err = mon.communicate()
        srv.close()
    assert mon.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize("metrics,allow", [("9464", "IPAddressAllow=localhost"), ("0.0.0.0:9464", None)])
def test_metrics_in_the_config_opens_the_network_and_still_verifies(tmp_path, metrics, allow):
    """metrics = ... in the config file: the unit runs with that config (the monitor takes the key), it may
    open AF_INET/AF_INET6 sockets (and, on loopback, talk to localhost only), and systemd still accepts it.
    Without metrics it opens none."""
    conf = tmp_path / "config.toml"
    conf.write_text(f'metrics = "{metrics}"\nmetrics-labels = "comm:50"\n')
    assert cli("install", "--config", str(conf), *dirs(tmp_path)).returncode == 0
    unit = tmp_path / "units" / "socket-snoop.service"
    lines = unit.read_text().splitlines()
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_NETLINK" in lines  # the metrics address's family only
    assert "SocketBindAllow=tcp:9464" in lines and "SocketBindDeny=any" in lines and "LimitNOFILE=65536" in lines
    assert any(line.startswith("ExecStart=") and f"--config {conf}" in line for line in lines)
    if allow:
        assert allow in lines and "IPAddressDeny=any" in lines
    else:
        assert "IPAddressDeny=any" not in lines
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "socket-snoop.service" not in r.stderr, r.stderr
    conf.write_text("json = true\n")
    r = cli("install", "--dry-run", "--config", str(conf), *dirs(tmp_path))
    assert "RestrictAddressFamilies=AF_UNIX AF_NETLINK\n" in r.stdout and "IPAddressDeny=any\n" in r.stdout
    assert "AF_INET" not in r.stdout


# -- the unit follows the config (issue 19.10) ------------------------------------------------------
def _unit_for(tmp_path, config_text, conf=None):
    conf = conf or tmp_path / "config.toml"
    conf.write_text(config_text)
    r = cli("install", "--config", str(conf), *dirs(tmp_path))
    assert r.returncode == 0, r.stderr
    return tmp_path / "units" / "socket-snoop.service"


def _systemd_accepts(unit):
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "socket-snoop.service" not in r.stderr, r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "Overall exposure level" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
@pytest.mark.parametrize("config_text, present, absent", [
    # a collector by address: its family and that address only
    ('syslog = "udp://[2001:db8::5]:514"\n', ["RestrictAddressFamilies=AF_UNIX AF_INET6 AF_NETLINK",
                                             "IPAddressDeny=any", "IPAddressAllow=2001:db8::5"],
     ["SocketBindDeny=any"]),
    ('syslog = "tcp://192.0.2.7:514"\n', ["RestrictAddressFamilies=AF_UNIX AF_INET AF_NETLINK",
                                         "IPAddressAllow=192.0.2.7"], []),
    # by name: whatever DNS answers, so both families and no address restriction
    ('syslog = "tcp://logs.example.org:514"\n', ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
     ["IPAddressDeny=any"]),
    ('metrics = "[::1]:9464"\n', ["RestrictAddressFamilies=AF_UNIX AF_INET6 AF_NETLINK",
                                  "SocketBindAllow=tcp:9464", "IPAddressAllow=localhost"], []),
    # AF_NETLINK is for the accept-queue-overflow warning's sock_diag socket alone: without it, none
    ('warn = ["accept-queue-overflow=off"]\n', ["RestrictAddressFamilies=AF_UNIX", "IPAddressDeny=any"], []),
    ('no-warnings = true\nmetrics = "127.0.0.1:9464"\n', ["RestrictAddressFamilies=AF_UNIX AF_INET"], []),
])
def test_the_unit_opens_what_the_outputs_need(tmp_path, config_text, present, absent):
    unit = _unit_for(tmp_path, config_text)
    lines = unit.read_text().splitlines()
    for line in present:
        assert line in lines, (line, unit.read_text())
    for line in absent:
        assert line not in lines, line
    _systemd_accepts(unit)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_paths_under_tmp_and_home_stay_visible(tmp_path):
    """A log under /tmp: the host's /tmp (logrotate rotates the file the monitor writes), not a private one;
    a config under /tmp (tmp_path is there) too; a config under /root: readable."""
    unit = _unit_for(tmp_path, f'log-file = "{tmp_path}/logs/x.log"\n')
    text = unit.read_text()
    assert "PrivateTmp=no" in text.splitlines() and "PrivateTmp=yes" not in text
    assert f"ReadWritePaths=/var/log -{tmp_path}/logs\n" in text
    _systemd_accepts(unit)
    home = tempfile.mkdtemp(prefix="ss-svc-", dir="/root")
    try:
        conf = os.path.join(home, "config.toml")
        with open(conf, "w") as f:
            f.write("json = true\n")
        os.chmod(conf, 0o644)
        r = cli("install", "--dry-run", "--config", conf, *dirs(tmp_path))
        assert r.returncode == 0, r.stderr
        assert "ProtectHome=read-only" in r.stdout.splitlines() and "ProtectHome=yes" not in r.stdout
    finally:
        shutil.rmtree(home)
    r = cli("install", "--dry-run", *dirs(tmp_path))  # the defaults: the strictest
    assert "PrivateTmp=yes" in r.stdout.splitlines() and "ProtectHome=yes" in r.stdout.splitlines()


def _unit_environment(unit):
    """The environment the unit gives the monitor (its Environment= lines, as systemd unquotes them)."""
    return _unit_environment_of(unit.read_text())


def _unit_environment_of(text):
    env = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line[len("Environment="):]):
                k, _, v = word.partition("=")
                env[k] = v.replace("%%", "%")
    return env


@pytest.mark.bpf
def test_the_monitor_says_what_the_unit_forbids(tmp_path):
    """The config gains metrics after the unit was installed: the monitor, run with the unit's environment,
    says in one line what the unit forbids; with the config the unit was made for, nothing."""
    conf = tmp_path / "config.toml"
    unit = _unit_for(tmp_path, "json = true\nno-log-file = true\n", conf)
    env = dict(ENV, **_unit_environment(unit))
    assert "SOCKETSNOOP_SANDBOX" in env
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()

    def run_monitor():
        return subprocess.run([sys.executable, "-m", "socketsnoop", "--config", str(conf), "-q", "--no-report",
                               "-P", str(free), "--duration", "0.5"], capture_output=True, text=True, env=env,
                              timeout=60)

    r = run_monitor()
    assert r.returncode == 0 and "forbids" not in r.stderr, r.stderr
    conf.write_text(f'json = true\nno-log-file = true\nmetrics = "127.0.0.1:{free}"\n')
    r = run_monitor()
    warnings = [line for line in r.stderr.splitlines() if "forbids" in line]
    assert len(warnings) == 1, r.stderr
    assert "AF_INET sockets" in warnings[0] and f"listening on port {free}" in warnings[0], warnings


def test_a_unit_made_before_af_netlink_is_said_to_forbid_it():
    """A unit whose sandbox has no AF_NETLINK (installed by an older socket-snoop, or with the warning off): the
    monitor with accept-queue-overflow on says at start that the unit forbids AF_NETLINK sockets; the unit
    `service install` writes now, nothing."""
    old = {SANDBOX: "families=AF_UNIX;peers=;ports=;write=/var/log;tmp=0;home=no"}
    line = conflict_line(RunSettings(), old)
    assert line and "AF_NETLINK sockets" in line, line
    now = _unit_environment_of(service.render_unit(["/usr/bin/socket-snoop"]))
    assert conflict_line(RunSettings(), now) is None
    assert conflict_line(RunSettings(no_warnings=True), old) is None
