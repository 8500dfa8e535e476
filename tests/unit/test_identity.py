"""The identity stage without the kernel: names from cgroup paths in every common shape, the cgroup tree
(a directory tree standing in for the cgroup2 mount: ids are inode numbers, as on cgroup2), the bounded caches,
the JSON keys and --context text, the filters' kernel entries, and `report` on logs that carry the names."""

import io
import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from socketsnoop.commands import report
from socketsnoop.settings.monitor import build_parser, filters_from, monitor_options
from socketsnoop.commands.run import Monitor
from socketsnoop.errors import SnoopError
from socketsnoop.kernel import abi
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.jsonline import JsonFormatter
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.pipeline.decode import make_row
from socketsnoop.pipeline.filters import (
    Filters,
    parse_cgroup,
    parse_container,
    parse_uid,
    parse_unit,
)
from socketsnoop.pipeline.identity import (
    CgroupTree,
    Identity,
    cgroup2_mount,
    container_of,
    names_of,
    pod_of,
    unit_of,
    units_of,
)

ID = "4f1c0b5e" * 8
ID2 = "9a8b7c6d" * 8
POD = "8b9a2c1d-3e4f-4a5b-8c7d-6e5f4a3b2c1d"


@pytest.mark.parametrize("path,unit,container,pod", [
    ("/system.slice/nginx.service", "nginx.service", None, None),
    ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", None, None),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", "user@1000.service", None, None),
    (f"/system.slice/docker-{ID}.scope", f"docker-{ID}.scope", ID, None),
    (f"/docker/{ID}", None, ID, None),
    (f"/machine.slice/libpod-{ID}.scope", f"libpod-{ID}.scope", ID, None),
    (f"/libpod_parent/libpod-{ID}", None, ID, None),
    (f"/system.slice/crio-{ID}.scope", f"crio-{ID}.scope", ID, None),
    (f"/system.slice/crio-conmon-{ID}.scope", f"crio-conmon-{ID}.scope", None, None),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/"
     f"cri-containerd-{ID}.scope", f"cri-containerd-{ID}.scope", ID, POD),
    (f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
     f"cri-containerd-{ID}.scope", ID, POD),
    (f"/kubepods/besteffort/pod{POD}/{ID}", None, ID, POD),
    (f"/docker/{ID[:63]}", None, None, None),
    ("/", None, None, None),
])
def test_names_from_cgroup_paths(path, unit, container, pod):
    assert (unit_of(path), container_of(path), pod_of(path)) == (unit, container, pod)


def test_cgroup2_mount_from_mountinfo(tmp_path):
    info = tmp_path / "mountinfo"
    hybrid = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
              "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
              "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    info.write_text(hybrid)
    assert cgroup2_mount(str(info)) == ("/sys/fs/cgroup/unified", "/")
    info.write_text("29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n")
    assert cgroup2_mount(str(info)) == ("/sys/fs/cgroup", "/")
    info.write_text("29 23 0:26 /kube/pod\\040x /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(str(info)) == ("/mnt/cg two", "/kube/pod x")
    info.write_text(hybrid.replace("cgroup2 cgroup2", "tmpfs tmpfs"))
    assert cgroup2_mount(str(info)) is None
    assert cgroup2_mount(str(tmp_path / "missing")) is None


def make_tree(root, *paths):
    for p in paths:
        parts = [x for x in p.split("/") if x]
        for i in range(1, len(parts) + 1):
            d = root.joinpath(*parts[:i])
            d.mkdir(exist_ok=True)
            (d / "cgroup.procs").write_text("")
    return CgroupTree(found=(str(root), "/"), min_interval=0.3)


def test_cgroup_tree_ids_are_inodes_and_misses_rewalk_once_a_second(tmp_path):
    tree = make_tree(tmp_path, "/system.slice/nginx.service", f"/system.slice/docker-{ID}.scope")
    nginx = os.stat(tmp_path / "system.slice" / "nginx.service").st_ino
    assert tree.path_of(nginx) == ("/system.slice/nginx.service", True)
    assert tree.path_of(os.stat(tmp_path).st_ino) == ("/", True)
    assert tree.walks == 1
    new = tmp_path / "system.slice" / "late.service"
    new.mkdir()
    ino = os.stat(new).st_ino
    assert tree.path_of(ino) == (None, False)  # walked less than min_interval ago: not final, ask again
    assert tree.walks == 1
    time.sleep(0.35)
    assert tree.path_of(ino) == ("/system.slice/late.service", True)
    assert tree.walks == 2 and tree.misses == 3
    time.sleep(0.35)
    assert tree.path_of(1) == (None, True)  # no such cgroup (removed before we looked): asked once
    assert tree.path_of(1) == (None, True) and tree.walks == 3 and tree.misses == 4
    tree.limit = 2
    tree.walk()
    assert len(tree.paths) == 2 and tree.truncated


def test_cgroup_tree_for_filters(tmp_path):
    tree = make_tree(tmp_path, "/system.slice/nginx.service", f"/system.slice/docker-{ID}.scope",
                     f"/kubepods/burstable/pod{POD}/{ID2}", f"/docker/{ID[:12]}{ID2[12:]}")
    assert tree.relative("/system.slice/nginx.service") == "/system.slice/nginx.service"
    assert tree.relative(str(tmp_path) + "/system.slice") == "/system.slice"
    assert tree.relative("/system.slice/nope.service") is None
    assert tree.id_of("/system.slice/nginx.service") == (os.stat(tmp_path / "system.slice/nginx.service").st_ino, 2)
    assert tree.find_unit("nginx.service") == ["/system.slice/nginx.service"]
    assert tree.find_unit("nope.service") == []
    assert set(tree.find_container(ID[:12])) == {ID, ID[:12] + ID2[12:]}
    assert tree.find_container(ID2[:12]) == {ID2: [f"/kubepods/burstable/pod{POD}/{ID2}"]}


def test_filters_resolve_to_kernel_entries(tmp_path):
    tree = make_tree(tmp_path, "/system.slice/nginx.service", f"/system.slice/docker-{ID}.scope",
                     f"/system.slice/docker-{ID[:12]}{ID2[12:]}.scope", "/kubepods.slice")
    f = Filters(include={"cgroup": ["/kubepods.slice"], "unit": ["nginx.service"], "pid": {5}, "uid": {0}},
                exclude={"container": [ID[:13]], "cgroup": [str(tmp_path) + "/system.slice/nginx.service"],
                         "pid": {5, 6}, "port": {22}, "addr": [ipaddress.ip_network("10.0.0.0/8")], "uid": {1000},
                         "comm": {b"backup"}}).resolve_cgroups(tree)
    ino = lambda p: os.stat(tmp_path / p.strip("/")).st_ino  # noqa: E731
    assert f.cgroup_ids == {ino("/kubepods.slice"): (1, abi.FV_INCLUDE),
                            ino("/system.slice/nginx.service"): (2, abi.FV_INCLUDE | abi.FV_EXCLUDE),
                            ino(f"/system.slice/docker-{ID}.scope"): (2, abi.FV_EXCLUDE)}
    assert f.cgroup_levels() == 0b110
    flags = f.flags()
    for bit in (abi.FILT_CGROUP, abi.FILT_X_CGROUP, abi.FILT_PID, abi.FILT_X_PID, abi.FILT_X_PORT, abi.FILT_X_ADDR,
                abi.FILT_UID, abi.FILT_X_UID, abi.FILT_X_COMM):
        assert flags & bit, bit
    entries = set(f.map_entries())
    assert (abi.MAP_FILTER_PIDS, abi.U32_KEY.pack(5), bytes((abi.FV_INCLUDE | abi.FV_EXCLUDE,))) in entries
    assert (abi.MAP_FILTER_PIDS, abi.U32_KEY.pack(6), bytes((abi.FV_EXCLUDE,))) in entries
    assert (abi.MAP_FILTER_UIDS, abi.U32_KEY.pack(1000), bytes((abi.FV_EXCLUDE,))) in entries
    assert (abi.MAP_FILTER_COMMS, b"backup".ljust(16, b"\0"), bytes((abi.FV_EXCLUDE,))) in entries
    bit = abi.ADDR_EXCLUDE << abi.PORT_KEY_KIND_SHIFT | 22  # filter_ports: a bitmap of 64-bit words
    assert (abi.MAP_FILTER_PORTS, abi.U32_KEY.pack(bit >> 6), abi.U64_KEY.pack(1 << (bit & 63))) in entries
    assert (abi.MAP_FILTER_ADDRS, abi.FILTER_KEY.pack(abi.FILTER_KEY_PREFIX_BITS + 8, abi.ADDR_EXCLUDE, 4,
                                                      bytes([10]).ljust(16, b"\0")), b"\x01") in entries
    assert (abi.MAP_FILTER_CGROUPS, abi.U64_KEY.pack(ino("/kubepods.slice")), bytes((abi.FV_INCLUDE,))) in entries
    with pytest.raises(SnoopError, match=f"more than one container: {ID[:12]}.*, {ID}|{ID}, "):
        Filters(include={"container": [ID[:12]]}).resolve_cgroups(tree)
    # a name not there yet: waited for, with a warning; every depth looked at meanwhile
    warned = []
    f = Filters(exclude={"unit": ["nope.service"]}, include={"cgroup": ["/nope"]}).resolve_cgroups(tree, warned.append)
    assert f.cgroups_missing == [("--cgroup", "/nope"), ("--exclude-unit", "nope.service")]
    assert len(warned) == 2 and "--exclude-unit nope.service: no such cgroup" in warned[1]
    assert f.cgroup_levels() == (1 << abi.CGROUP_LEVELS) - 1 and f.flags() & abi.FILT_CGROUP
    with pytest.raises(SnoopError, match="no cgroup2 mount"):
        Filters(include={"unit": ["x.service"]}).resolve_cgroups(CgroupTree(found=False))
    assert Filters(include={"pid": {1}}).resolve_cgroups(CgroupTree(found=False)).flags() & abi.FILT_CGROUP == 0


def test_option_values():
    assert parse_uid("0") == 0 and parse_uid("root") == 0 and parse_uid("65534") == 65534
    assert parse_unit("nginx") == "nginx.service" and parse_unit("session-3.scope") == "session-3.scope"
    assert parse_cgroup("/system.slice//nginx.service/") == "/system.slice/nginx.service"
    assert parse_container(ID[:12].upper()) == ID[:12]
    for parse, bad in ((parse_uid, "no-such-user-" + uuid.uuid4().hex[:6]), (parse_unit, "a/b"),
                       (parse_cgroup, "system.slice"), (parse_cgroup, "/a/../b"), (parse_container, "abc"),
                       (parse_container, "z" * 12)):
        with pytest.raises(SnoopError) as e:
            parse(bad)
        assert e.value.status == 2


class Tree:
    """A CgroupTree over a fixed mapping: id -> path."""

    mount = "/fake"
    misses = walks = 0

    def __init__(self, paths, final=True):
        self.paths = paths
        self.final = final

    def path_of(self, cid):
        self.misses += 1
        p = self.paths.get(cid)
        return p, (self.final or p is not None)

    def names(self, path):
        return names_of(path)  # every directory root's


def test_identity_caches_are_bounded_and_count_misses():
    ident = Identity(Tree({7: f"/system.slice/docker-{ID}.scope"}), limit=2)
    assert ident.user(0) == "root" and ident.user(2**31 + 12345) is None
    assert ident.exe(os.getpid()) == os.path.realpath(sys.executable)
    assert ident.exe(2**22 + 1) == "-"  # no such process: gone
    for uid in (0, 1, 2, 3):
        ident.user(uid)
    assert len(ident.users) <= 2 and ident.stats()["user"] == 5
    owner, final = ident.owner(7, 0, os.getpid())
    assert final and owner == (0, "root", f"/system.slice/docker-{ID}.scope", f"docker-{ID}.scope", ID, None,
                               os.path.realpath(sys.executable), None)
    ident.owner(7, 0, os.getpid())
    assert ident.tree.misses == 1  # the cgroup's names are cached
    assert ident.owner(0, 0, 0) == ((None,) * 8, True)  # no cgroup, no process: nothing known


def rows():
    mine = os.getpid()
    common = dict(ts_ns=1, skaddr=0x10, type=abi.EV_STATE, oldstate=2, newstate=1, sport=5, dport=80,
                  saddr=bytes([127, 0, 0, 1]) + bytes(12), daddr=bytes([127, 0, 0, 1]) + bytes(12), comm=b"curl")
    return [make_row(pid=mine, uid=0, cgroup=7, owner=abi.OWNER_SOCKET, **common),
            make_row(pid=mine, uid=0, cgroup=8, owner=abi.OWNER_SOCKET, **common),  # a hostile cgroup name
            make_row(pid=0, uid=0, cgroup=0, owner=abi.OWNER_NONE, **common)]  # no process, no cgroup


HOSTILE = '/system.slice/x"\n\x1b[31m y.service'


def test_json_keys_present_when_known_absent_when_not():
    ident = Identity(Tree({7: f"/kubepods/burstable/pod{POD}/{ID}", 8: HOSTILE}))
    fmt = JsonFormatter(Clock(), ident)
    lines = fmt.lines(rows())
    assert all(ln.count("\n") == 1 and ln.endswith("}\n") and "\x1b" not in ln for ln in lines)
    a, b, c = map(json.loads, lines)
    assert (a["uid"], a["user"], a["cgroup"], a["container"], a["pod"], a["exe"]) == (
        0, "root", f"/kubepods/burstable/pod{POD}/{ID}", ID, POD, os.path.realpath(sys.executable))
    assert "unit" not in a
    assert b["cgroup"] == HOSTILE and b["unit"] == HOSTILE.rsplit("/", 1)[1]
    assert not {"uid", "user", "exe", "cgroup", "unit", "container", "pod"} & set(c)
    assert a["sock"] == "0x10" and a["comm"] == "curl" and a["new_state"] == "ESTABLISHED"  # the existing keys
    plain = json.loads(JsonFormatter(Clock()).lines(rows())[0])
    assert set(a) - set(plain) == {"uid", "user", "cgroup", "container", "pod", "exe"}


def test_context_text_and_the_seed_line_unchanged():
    ident = Identity(Tree({7: f"/kubepods/burstable/pod{POD}/{ID}", 8: HOSTILE}))
    seed = TextFormatter(Clock()).lines(rows())
    ctx = TextFormatter(Clock(), ident, context=True).lines(rows())
    assert [ln.split(" STATE=")[0] for ln in seed] == [ln.split(" STATE=")[0] for ln in ctx]
    assert all(ln.endswith(" STATE=Connection Established\n") for ln in seed)
    assert ctx[0].endswith(f" STATE=Connection Established USER=root CONTAINER={ID[:12]} POD={POD}\n")
    assert ctx[1].endswith(r' USER=root UNIT=x"\x0a\x1b[31m\x20y.service' + "\n")
    assert ctx[2].endswith(" STATE=Connection Established\n")
    assert all(ln.count("\n") == 1 and "\x1b" not in ln for ln in ctx)
    # a default text formatter given an identity (JSON is the main format) keeps the seed's line
    assert TextFormatter(Clock(), ident).lines(rows()) == seed


def test_names_not_known_yet_are_asked_again():
    tree = Tree({}, final=False)
    fmt = JsonFormatter(Clock(), Identity(tree))
    assert "cgroup" not in json.loads(fmt.lines(rows()[:1])[0])
    tree.paths[7] = "/system.slice/late.service"  # as a walk of the tree finds a cgroup made since
    tree.walks += 1
    assert json.loads(fmt.lines(rows()[:1])[0])["unit"] == "late.service"


def test_report_groups_by_unit_container_user_and_filters_on_them(tmp_path):
    ident = Identity(Tree({7: f"/system.slice/docker-{ID}.scope", 8: "/system.slice/nginx.service"}))
    r = rows()
    lines = TextFormatter(Clock(), ident, context=True).lines(r[:2]) + JsonFormatter(Clock(), ident).lines(r[:2])
    log = tmp_path / "log"
    log.write_text("".join(lines))

    def run(*args):
        out = io.StringIO()
        opts = report.build_parser().parse_args([str(log), "--json", "--no-lifecycles", *args])
        assert report.run(opts, out) == 0
        return json.loads(out.getvalue())

    s = run()
    assert s["events"] == 4
    assert {u["name"]: u["events"] for u in s["units"]} == {f"docker-{ID}.scope": 2, "nginx.service": 2}
    assert {c["name"]: c["established"] for c in s["containers"]} == {ID[:12]: 2}
    assert s["users"] == [{"name": "root", "events": 4, "established": 4, "retransmits": 0, "resets": 0}]
    assert run("--unit", "nginx.service")["events"] == 2
    assert run("--exclude-unit", "nginx.service")["events"] == 2
    assert run("--container", ID[:12])["events"] == 2
    assert run("--container", ID)["events"] == 2  # the text line has 12 hex digits, the JSON line all 64
    # a text line has no cgroup path: --cgroup keeps only the JSON lines, --exclude-cgroup leaves text lines in
    assert run("--cgroup", "/system.slice")["events"] == 2
    assert run("--exclude-cgroup", "/system.slice/nginx.service")["events"] == 3
    assert run("--uid", "root")["events"] == 4 and run("--exclude-uid", "0")["events"] == 0
    out = io.StringIO()
    report.run(report.build_parser().parse_args([str(log), "--no-lifecycles"]), out)
    text = out.getvalue()
    assert "Units (top 10)" in text and f"  {ID[:12]}: 2 events" in text and "  root: 4 events" in text


def test_no_cgroup2_mount_is_said_once_and_the_fields_left_out():
    said = []
    ident = Identity(CgroupTree(found=False), warn=said.append)
    assert len(said) == 1 and "no cgroup v2 mount" in said[0]
    owner, final = ident.owner(12345, 0, os.getpid())
    assert final and owner.cgroup is None and owner.unit is None and owner.user == "root"
    line = json.loads(JsonFormatter(Clock(), ident).lines(rows()[:1])[0])
    assert "cgroup" not in line and line["user"] == "root"
    assert len(said) == 1


def test_the_names_are_made_only_where_an_output_shows_them():
    """The seed's text path gets no identity stage (no cgroup walk, no lookups); JSON and --context do, and a
    cgroup filter needs the tree (to resolve it at start) but not the names."""
    for argv, tree, names in (([], False, False), (["--json"], True, True), (["--context"], True, True),
                              (["--unit", "x.service"], True, False)):
        opts = build_parser().parse_args(["--no-log-file", *argv])
        mon = Monitor(opts, filters_from(opts))
        assert (mon.cgroups is not None, mon.identity is not None) == (tree, names), argv
        assert ("lines" in vars(mon.formatter)) == names  # the formatter's own lines(), or the names' one


def test_identity_options_in_the_config_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('context = true\nuid = ["root", 65534]\nexclude-unit = ["backup"]\n'
                    f'container = "{ID[:12]}"\nexclude-cgroup = ["/user.slice/"]\nexclude-port = [22]\n')
    opts = monitor_options(["--config", str(path)])
    f = filters_from(opts)
    assert opts.context and f.include["uid"] == {0, 65534} and f.exclude["unit"] == {"backup.service"}
    assert f.include["container"] == {ID[:12]} and f.exclude["cgroup"] == {"/user.slice"} and f.exclude["port"] == {22}
    path.write_text('exclude-uid = ["no-such-user-here"]\n')
    with pytest.raises(SnoopError, match="line 1: exclude-uid: invalid value") as e:
        monitor_options(["--config", str(path)])
    assert e.value.status == 2


# -- trust: names recognised only where their makers put them (issue 19.6) -------------------------------

PLANTED = "/user.slice/user-65534.slice/user@65534.service/app.slice/backup.service"


@pytest.mark.parametrize("path,names", [
    (PLANTED, ("user@65534.service", "backup.service", None, None)),
    (f"/user.slice/user-65534.slice/user@65534.service/docker-{ID}.scope",
     ("user@65534.service", f"docker-{ID}.scope", None, None)),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container",
     ("user@1000.service", f"libpod-{ID}.scope", None, None)),  # rootless podman: the user's claim
    ("/user.slice/user-65534.slice/user@65534.service", ("user@65534.service", None, None, None)),
    (f"/system.slice/docker-{ID}.scope/backup.service", (f"docker-{ID}.scope", None, ID, None)),
    (f"/system.slice/x.service/docker-{ID}.scope", ("x.service", None, None, None)),
    (f"/system.slice/x.service/docker/{ID}", ("x.service", None, None, None)),
    (f"/system.slice/x.service/kubepods/pod{POD}/{ID}", ("x.service", None, None, None)),
    (f"/system.slice/x.service/kubepods-pod{POD.replace('-', '_')}.slice", ("x.service", None, None, None)),
    (f"/docker/{ID}/docker/{ID2}", (None, None, ID, None)),
    (f"/machine.slice/libpod-{ID}.scope/container", (f"libpod-{ID}.scope", None, ID, None)),
    (f"/machine.slice/libpod-conmon-{ID}.scope", (f"libpod-conmon-{ID}.scope", None, None, None)),
    (f"/kubepods/pod{POD}/crio-{ID}", (None, None, ID, POD)),
    (f"/kubepods/burstable/pod{POD}/{ID}/x/{ID2}", (None, None, ID, POD)),
    (f"/process_api/{ID}", (None, None, None, None)),
    ("/init.scope", ("init.scope", None, None, None)),
])
def test_names_only_where_their_makers_put_them(path, names):
    """A unit is the first .service/.scope after the slices (systemd's own reading); below user@UID.service the
    user's own unit is user_unit, never the unit; a container or pod only in its runtime's or the kubelet's
    place, not by a name found deeper (a unit's own subtree may be named by anyone it was delegated to)."""
    assert tuple(names_of(path)) == names


def test_names_only_in_the_part_root_named():
    """`trusted`: the leading components root named; nothing is recognised in the rest."""
    assert names_of(f"/system.slice/docker-{ID}.scope", 2).container == ID
    assert tuple(names_of(f"/system.slice/docker-{ID}.scope", 1)) == (None,) * 4
    assert tuple(names_of(f"/docker/{ID}", 1)) == (None,) * 4
    assert names_of(f"/kubepods/besteffort/pod{POD}/{ID}", 3) == (None, None, None, POD)
    # the user's unit is the user's whoever named it: shown as such, below a unit root named
    assert tuple(names_of(PLANTED, 3)) == ("user@65534.service", "backup.service", None, None)
    assert units_of(PLANTED) == ["user.slice", "user-65534.slice", "user@65534.service"]
    assert units_of(f"/system.slice/docker-{ID}.scope/x.service") == ["system.slice", f"docker-{ID}.scope"]
    assert units_of("/system.slice") == ["system.slice"]


def test_a_directory_others_may_write_to_names_nothing_below_it(tmp_path):
    """The cgroup tree's trust: a directory's name counts when its parent is root's (or the monitor's own
    user's, here the test's) and writable by no group or other. A directory given to a user (here: made
    writable by others, as a chown to that user makes it writable by them) names nothing below it: the
    planted backup.service and docker scope are the user's, and the filters do not find them."""
    tree = make_tree(tmp_path, PLANTED, f"/user.slice/user-65534.slice/user@65534.service/docker-{ID}.scope",
                     "/system.slice/backup.service", f"/system.slice/docker-{ID2}.scope", "/open.slice/x.service")
    for d in ("user.slice/user-65534.slice/user@65534.service", "open.slice"):
        os.chmod(tmp_path / d, 0o777)
    assert tree.trusted_depth(PLANTED) == 3 and tree.trusted_depth("/open.slice/x.service") == 1
    assert tree.trusted_depth("/system.slice/backup.service") == 2
    assert tuple(tree.names(PLANTED)) == ("user@65534.service", "backup.service", None, None)
    assert tree.names("/open.slice/x.service").unit is None
    assert tree.find_unit("backup.service") == ["/system.slice/backup.service"]
    assert tree.find_unit("x.service") == [] and tree.find_unit("user@65534.service") == [
        "/user.slice/user-65534.slice/user@65534.service"]
    assert tree.find_unit("system.slice") == ["/system.slice"]
    assert tree.find_container(ID[:12]) == {}
    assert tree.find_container(ID2[:12]) == {ID2: [f"/system.slice/docker-{ID2}.scope"]}
    warned = []  # the planted container is none: waited for, as a name not there yet is
    f = Filters(exclude={"container": [ID[:12]]}).resolve_cgroups(tree, warned.append)
    assert f.cgroups_missing == [("--exclude-container", ID[:12])] and len(warned) == 1 and not f.cgroup_ids
    f = Filters(exclude={"unit": ["backup.service"]}).resolve_cgroups(tree)
    assert list(f.cgroup_ids) == [os.stat(tmp_path / "system.slice/backup.service").st_ino]
    # what the monitor shows for the planted cgroup: the user's manager, and the user's own unit beside it
    ident = Identity(tree)
    cid = os.stat(tmp_path / PLANTED.strip("/")).st_ino
    owner, final = ident.owner(cid, 65534, os.getpid())
    assert final and (owner.cgroup, owner.unit, owner.user_unit, owner.container) == (
        PLANTED, "user@65534.service", "backup.service", None)
    row = make_row(pid=os.getpid(), uid=65534, cgroup=cid, owner=abi.OWNER_SOCKET, type=abi.EV_STATE, newstate=1,
                   comm=b"curl")
    line = TextFormatter(Clock(), ident, context=True).lines([row])[0]
    assert line.endswith(" USER=nobody UNIT=user@65534.service USER_UNIT=backup.service\n"), line
    rec = json.loads(JsonFormatter(Clock(), ident).lines([row])[0])
    assert (rec["unit"], rec["user_unit"]) == ("user@65534.service", "backup.service")
    # and a logged line: report's filters read the path as the monitor does
    def logged(f):
        return f.match(abi.EV_STATE, 4, ipaddress.ip_address("10.0.0.1"), 1, ipaddress.ip_address("10.0.0.2"), 2,
                       1, b"curl", 1, cgroup=PLANTED)
    assert logged(Filters(exclude={"unit": ["backup.service"]}))
    assert not logged(Filters(exclude={"unit": ["user@65534.service"]}))
    assert not logged(Filters(include={"unit": ["backup.service"]}))


# -- exe after an exec (issue 19.7) ---------------------------------------------------------------------

def test_exe_is_read_again_after_an_exec():
    """A real process execs another program: its events before and after carry the same pid and its comm
    (the kernel's, from the event) before and after; the JSON's exe follows the program, not the first one
    read for that pid."""
    sleep = os.path.realpath("/bin/sleep")
    p = subprocess.Popen([sys.executable, "-c", "import os, sys; sys.stdin.readline(); "
                          "os.execv('/bin/sleep', ['sleep', '30'])"], stdin=subprocess.PIPE)
    try:
        fmt = JsonFormatter(Clock(), Identity(Tree({})))

        def exe(comm, sport):
            row = make_row(pid=p.pid, uid=0, owner=abi.OWNER_SOCKET, type=abi.EV_STATE, newstate=1, sport=sport,
                           comm=comm)
            return json.loads(fmt.lines([row])[0])["exe"]

        assert exe(b"python3", 1) == os.path.realpath(sys.executable)
        p.stdin.write(b"go\n")
        p.stdin.flush()
        for _ in range(200):
            if os.path.realpath(f"/proc/{p.pid}/exe") == sleep:
                break
            time.sleep(0.01)
        assert exe(b"sleep", 2) == sleep
        assert exe(b"python3", 3) == os.path.realpath(sys.executable)  # an event of the first program, late
    finally:
        p.kill()
        p.wait()


def test_report_reads_context_lines_with_the_users_own_unit(tmp_path):
    """A --context line of a cgroup in a user's delegated tree ends in USER_UNIT=: `report` still reads its
    state, user and unit (the user's manager), and --unit does not take the user's unit for a system one."""
    (tmp_path / "cg").mkdir()
    tree = make_tree(tmp_path / "cg", PLANTED)
    ident = Identity(tree)
    cid = os.stat(tmp_path / "cg" / PLANTED.strip("/")).st_ino
    row = make_row(pid=os.getpid(), uid=0, cgroup=cid, owner=abi.OWNER_SOCKET, type=abi.EV_STATE, newstate=1,
                   comm=b"curl", sport=5, dport=80, saddr=bytes([127, 0, 0, 1]) + bytes(12),
                   daddr=bytes([127, 0, 0, 1]) + bytes(12))
    line = TextFormatter(Clock(), ident, context=True).lines([row])[0]
    assert line.endswith(" UNIT=user@65534.service USER_UNIT=backup.service\n"), line
    log = tmp_path / "log"
    log.write_text(line)

    def run(*args):
        out = io.StringIO()
        assert report.run(report.build_parser().parse_args([str(log), "--json", "--no-lifecycles", *args]), out) == 0
        return json.loads(out.getvalue())

    s = run()
    assert s["events"] == 1 and s["malformed"] == 0, s
    assert [u["name"] for u in s["units"]] == ["user@65534.service"]
    assert run("--unit", "backup.service")["events"] == 0
    assert run("--unit", "user@65534.service")["events"] == 1
