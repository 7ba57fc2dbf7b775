"""pyvz.config: OpenVZ-format config files, the merged CT view and the names/ links."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyvz.config import (
    ConfigFile,
    CtConfig,
    ct_config,
    existing_ctids,
    load_global,
    name_owner,
    remove_name_link,
    resolve_ctid,
    set_name_link,
    substitute_veid,
)
from pyvz.errors import ExitCode, VzError
from pyvz.params import DISABLED, DISKSPACE, HOSTNAME, ONBOOT, PRIVATE, ROOT, STOP_TIMEOUT
from pyvz.paths import Paths
from pyvz.units import BarrierLimit

SAMPLE = """\
# Global parameters
# (comments stay where they are)

VE_ROOT="/var/lib/vz/root/$VEID"
VE_PRIVATE='/var/lib/vz/private/$VEID'
  # indented comment
SOME_FUTURE_KEY="kept as is"
ONBOOT=yes
EMPTY=""

LAST="x"
"""


def parse(text: str, name: str = "101.conf") -> ConfigFile:
    return ConfigFile.parse(text, Path("/etc/vz/conf") / name)


# ---- ConfigFile ----------------------------------------------------------------------------


def test_parse_render_is_identity() -> None:
    assert parse(SAMPLE).render() == SAMPLE


def test_get_unquotes_values() -> None:
    conf = parse(SAMPLE)
    assert conf.get("VE_ROOT") == "/var/lib/vz/root/$VEID"
    assert conf.get("VE_PRIVATE") == "/var/lib/vz/private/$VEID"
    assert conf.get("ONBOOT") == "yes"
    assert conf.get("EMPTY") == ""
    assert conf.get("SOME_FUTURE_KEY") == "kept as is"
    assert conf.get("MISSING") is None


def test_items_in_file_order() -> None:
    assert list(parse(SAMPLE).items()) == [
        "VE_ROOT",
        "VE_PRIVATE",
        "SOME_FUTURE_KEY",
        "ONBOOT",
        "EMPTY",
        "LAST",
    ]


def test_set_existing_key_edits_in_place() -> None:
    conf = parse(SAMPLE)
    conf.set("ONBOOT", "no")
    expected = SAMPLE.replace("ONBOOT=yes", 'ONBOOT="no"')
    assert conf.render() == expected


def test_set_new_key_appends_and_keeps_everything_else() -> None:
    conf = parse(SAMPLE)
    conf.set("HOSTNAME", "web")
    assert conf.render() == SAMPLE + 'HOSTNAME="web"\n'


def test_set_does_not_touch_commented_out_keys() -> None:
    conf = parse('#HOSTNAME="old"\n')
    conf.set("HOSTNAME", "new")
    assert conf.render() == '#HOSTNAME="old"\nHOSTNAME="new"\n'


def test_duplicate_keys_last_wins_and_set_edits_the_last() -> None:
    conf = parse('A="1"\nB="2"\nA="3"\n')
    assert conf.get("A") == "3"
    assert conf.items() == {"A": "3", "B": "2"}
    conf.set("A", "9")
    assert conf.render() == 'A="1"\nB="2"\nA="9"\n'


def test_remove_drops_every_line_of_the_key_only() -> None:
    conf = parse('# head\nA="1"\nB="2"\n\nA="3"\n')
    conf.remove("A")
    assert conf.render() == '# head\nB="2"\n\n'
    assert conf.get("A") is None
    conf.remove("NOT_THERE")
    assert conf.render() == '# head\nB="2"\n\n'


@pytest.mark.parametrize(
    "value",
    [
        'say "hi"',
        "back\\slash",
        'both \\" mixed',
        "\\",
        '"',
        "trailing\\",
        "it's",
        "$VEID and ${VEID}",
        "a `tick`",
        "semi;colon & pipe |",
        "  spaces  ",
        "",
        "tab\there",
        "literal \\n not a newline",
    ],
)
def test_quoting_round_trip(value: str) -> None:
    conf = parse("")
    conf.set("KEY", value)
    rendered = conf.render()
    assert rendered.count("\n") == 1
    assert rendered.startswith('KEY="') and rendered.endswith('"\n')
    assert parse(rendered).get("KEY") == value


def test_quoting_escapes_quotes_and_backslashes() -> None:
    conf = parse("")
    conf.set("KEY", 'a"b\\c')
    assert conf.render() == 'KEY="a\\"b\\\\c"\n'


def test_set_newline_value_is_rejected_or_round_trips() -> None:
    conf = parse("")
    try:
        conf.set("DESCRIPTION", "line one\nline two")
    except VzError as err:
        assert err.code in (ExitCode.INVALID_PARAMETER_VALUE, ExitCode.CONFIG_SAVE_ERROR)
        return
    assert parse(conf.render()).get("DESCRIPTION") == "line one\nline two"


@pytest.mark.parametrize("value", ["$(echo pwned)", "`echo pwned`"])
def test_written_values_are_literal_when_sourced_by_sh(tmp_path: Path, value: str) -> None:
    conf = ConfigFile(tmp_path / "101.conf")
    conf.set("DESCRIPTION", value)
    conf.write()
    shown = subprocess.run(
        ["sh", "-c", '. "$1"; printf %s "$DESCRIPTION"', "sh", str(conf.path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    assert shown == value


def test_veid_stays_expandable_when_sourced_by_sh(tmp_path: Path) -> None:
    conf = ConfigFile(tmp_path / "101.conf")
    conf.set("VE_PRIVATE", "/vz/private/$VEID")
    conf.write()
    shown = subprocess.run(
        ["sh", "-c", '. "$1"; printf %s "$VE_PRIVATE"', "sh", str(conf.path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        env={"VEID": "101", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    ).stdout
    assert shown == "/vz/private/101"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("K=plain", "plain"),
        ("K='single quoted'", "single quoted"),
        ('K="double quoted"', "double quoted"),
        ('K="esc \\$x \\`y\\`"', "esc $x `y`"),
        ("  K=indented", "indented"),
        ('K="trailing space"   ', "trailing space"),
        ("K=", ""),
        # OpenVZ's stock vz.conf: a comment after the value, as the shell reads it
        ("K=inherit # Copy from host system's /etc/resolv.conf", "inherit"),
        ('K="quoted" # and a comment', "quoted"),
        ("K=no#comment", "no#comment"),
        # vzctl takes the rest of an unquoted line (its parse_line); the shell would not
        ("K=two words", "two words"),
        ('K="a # b"', "a # b"),
    ],
)
def test_accepted_value_forms(line: str, value: str) -> None:
    assert parse(line + "\n").get("K") == value


@pytest.mark.parametrize(
    "line",
    ["JUSTAKEY", "1K=2", 'K="a"b"', "K='open", 'K="open', "export K=1", "K = 1"],
)
def test_malformed_line_names_file_and_line(line: str) -> None:
    text = "# first\n\nGOOD=1\n" + line + "\n"
    with pytest.raises(VzError) as caught:
        ConfigFile.parse(text, Path("/etc/vz/conf/101.conf"))
    assert caught.value.code == ExitCode.INVALID_CONFIG
    assert "/etc/vz/conf/101.conf:4:" in caught.value.message


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VzError) as caught:
        ConfigFile.load(tmp_path / "101.conf")
    assert caught.value.code == ExitCode.NO_CT_CONFIG
    with pytest.raises(VzError) as caught:
        ConfigFile.load(tmp_path / "vz.conf", missing=ExitCode.NO_GLOBAL_CONFIG)
    assert caught.value.code == ExitCode.NO_GLOBAL_CONFIG
    assert str(tmp_path / "vz.conf") in caught.value.message


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "101.conf"
    path.write_text(SAMPLE)
    before = path.stat().st_ino
    conf = ConfigFile.load(path)
    conf.set("HOSTNAME", "web")
    conf.write()
    assert os.listdir(tmp_path) == ["101.conf"]
    assert path.read_text() == SAMPLE + 'HOSTNAME="web"\n'
    # replaced by rename, not rewritten in place: a reader never sees half a file
    assert path.stat().st_ino != before
    assert path.stat().st_mode & 0o777 == 0o644
    assert ConfigFile.load(path).get("HOSTNAME") == "web"


def test_write_to_other_path(tmp_path: Path) -> None:
    conf = parse('A="1"\n')
    conf.write(tmp_path / "copy.conf")
    assert (tmp_path / "copy.conf").read_text() == 'A="1"\n'
    assert os.listdir(tmp_path) == ["copy.conf"]


def test_write_failure_is_config_save_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "101.conf"
    target.mkdir()  # rename onto a directory fails
    with pytest.raises(VzError) as caught:
        parse('A="1"\n').write(target)
    assert caught.value.code == ExitCode.CONFIG_SAVE_ERROR
    assert str(target) in caught.value.message
    assert os.listdir(tmp_path) == ["101.conf"]
    assert target.is_dir()

    with pytest.raises(VzError) as caught:
        parse('A="1"\n').write(tmp_path / "no-such-dir" / "101.conf")
    assert caught.value.code == ExitCode.CONFIG_SAVE_ERROR


# ---- CtConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/vz/private/$VEID", "/vz/private/101"),
        ("/vz/private/${VEID}", "/vz/private/101"),
        ("/vz/$CTID/${CTID}", "/vz/101/101"),
        ("$VEID-$VEID", "101-101"),
        ("$VEIDX", "$VEIDX"),
        ("$VEID_x", "$VEID_x"),
        ("${VEID", "${VEID"),
        ("no variables", "no variables"),
    ],
)
def test_substitute_veid(value: str, expected: str) -> None:
    assert substitute_veid(value, 101) == expected


def test_merge_overlays_ct_on_global_and_substitutes() -> None:
    global_conf = parse(
        'VE_ROOT="/var/lib/vz/root/$VEID"\nVE_PRIVATE="/var/lib/vz/private/${VEID}"\nONBOOT="no"\n',
        "vz.conf",
    )
    ct_conf = parse('ONBOOT="yes"\nHOSTNAME="web"\nDISKSPACE="1048576:2097152"\n')
    merged = CtConfig.merge(101, global_conf.items(), ct_conf.items(), ct_conf.path)
    assert merged.ctid == 101
    assert merged.source == Path("/etc/vz/conf/101.conf")
    assert merged.raw("VE_ROOT") == "/var/lib/vz/root/101"
    assert merged.get(ROOT) == "/var/lib/vz/root/101"
    assert merged.get(PRIVATE) == "/var/lib/vz/private/101"
    assert merged.get(ONBOOT) is True
    assert merged.get(HOSTNAME) == "web"
    assert merged.get(DISKSPACE) == BarrierLimit(1048576, 2097152)
    assert merged.raw("NOT_SET") is None


def test_ct_config_helper_matches_merge() -> None:
    global_conf = parse('VE_ROOT="/r/$VEID"\n', "vz.conf")
    ct_conf = parse('HOSTNAME="h"\n')
    merged = ct_config(Paths(Path("/")), global_conf, ct_conf, 202)
    assert merged.values == {"VE_ROOT": "/r/202", "HOSTNAME": "h"}
    assert merged.source == ct_conf.path


def test_get_falls_back_to_param_default() -> None:
    merged = CtConfig.merge(101, {}, {"DISABLED": ""}, Path("/x/101.conf"))
    assert merged.get(ONBOOT) is False  # ONBOOT.default
    assert merged.get(DISABLED) is False  # empty counts as unset
    assert merged.get(HOSTNAME) is None  # no default
    assert merged.get(STOP_TIMEOUT) is None


def test_get_bad_value_is_invalid_config_naming_source_and_key() -> None:
    merged = CtConfig.merge(101, {}, {"ONBOOT": "perhaps"}, Path("/etc/vz/conf/101.conf"))
    with pytest.raises(VzError) as caught:
        merged.get(ONBOOT)
    assert caught.value.code == ExitCode.INVALID_CONFIG
    assert "/etc/vz/conf/101.conf" in caught.value.message
    assert "ONBOOT" in caught.value.message


def test_require_reports_missing_key() -> None:
    merged = CtConfig.merge(101, {"VE_ROOT": "/r/$VEID"}, {}, Path("/etc/vz/conf/101.conf"))
    assert merged.require(ROOT, ExitCode.VE_ROOT_NOTSET) == "/r/101"
    with pytest.raises(VzError) as caught:
        merged.require(PRIVATE, ExitCode.VE_PRIVATE_NOTSET)
    assert caught.value.code == ExitCode.VE_PRIVATE_NOTSET
    assert "VE_PRIVATE" in caught.value.message


def test_load_global(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    with pytest.raises(VzError) as caught:
        load_global(paths)
    assert caught.value.code == ExitCode.NO_GLOBAL_CONFIG
    paths.etc_vz.mkdir(parents=True)
    paths.vz_conf.write_text('LOCKDIR="/var/lib/vz/lock"\n')
    assert load_global(paths).get("LOCKDIR") == "/var/lib/vz/lock"


# ---- names/ and CTIDs ----------------------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path)
    paths.conf_dir.mkdir(parents=True)
    for ctid in (101, 102):
        paths.conf_file(ctid).write_text(f'HOSTNAME="ct{ctid}"\n')
    return paths


def test_set_name_link_points_at_the_config(paths: Paths) -> None:
    set_name_link(paths, "web", 101)
    link = paths.name_link("web")
    assert link.is_symlink()
    assert os.readlink(link) == "../conf/101.conf"
    assert link.resolve() == paths.conf_file(101).resolve()
    assert name_owner(paths, "web") == 101
    assert os.listdir(paths.names_dir) == ["web"]


def test_set_name_link_repoints_atomically(paths: Paths) -> None:
    set_name_link(paths, "web", 101)
    set_name_link(paths, "web", 102)
    assert os.readlink(paths.name_link("web")) == "../conf/102.conf"
    assert name_owner(paths, "web") == 102
    assert os.listdir(paths.names_dir) == ["web"]


def test_name_owner_none_cases(paths: Paths) -> None:
    assert name_owner(paths, "nobody") is None  # no names dir yet
    set_name_link(paths, "gone", 103)  # config 103 does not exist
    assert name_owner(paths, "gone") is None
    paths.name_link("plain").write_text("not a link")
    assert name_owner(paths, "plain") is None
    os.symlink("../conf/notes.txt", paths.name_link("odd"))
    assert name_owner(paths, "odd") is None


def test_remove_name_link_only_removes_own_link(paths: Paths) -> None:
    set_name_link(paths, "web", 101)
    remove_name_link(paths, "web", 102)  # someone else's name: left alone
    assert name_owner(paths, "web") == 101
    remove_name_link(paths, "web", 101)
    assert not paths.name_link("web").exists()
    assert not paths.name_link("web").is_symlink()
    remove_name_link(paths, "web", 101)  # already gone: no error
    remove_name_link(paths, "never", 101)
    assert os.listdir(paths.names_dir) == []


def test_remove_name_link_does_not_delete_regular_files(paths: Paths) -> None:
    paths.names_dir.mkdir()
    paths.name_link("web").write_text("admin's note")
    remove_name_link(paths, "web", 101)
    assert paths.name_link("web").read_text() == "admin's note"


def test_resolve_ctid_by_number(paths: Paths) -> None:
    assert resolve_ctid(paths, "101") == 101
    assert resolve_ctid(paths, "555") == 555  # numbers are not looked up


def test_resolve_ctid_by_name(paths: Paths) -> None:
    set_name_link(paths, "web", 102)
    assert resolve_ctid(paths, "web") == 102


def test_resolve_ctid_unknown_name(paths: Paths) -> None:
    with pytest.raises(VzError) as caught:
        resolve_ctid(paths, "nosuchct")
    assert caught.value.code == ExitCode.NO_CT_CONFIG
    assert "nosuchct" in caught.value.message


def test_resolve_ctid_stale_name_is_unknown(paths: Paths) -> None:
    set_name_link(paths, "old", 101)
    paths.conf_file(101).unlink()
    with pytest.raises(VzError) as caught:
        resolve_ctid(paths, "old")
    assert caught.value.code == ExitCode.NO_CT_CONFIG


@pytest.mark.parametrize(("text", "code"), [("100", ExitCode.INVALID_PARAMETER_VALUE), ("a/b", None)])
def test_resolve_ctid_rejects_bad_input(paths: Paths, text: str, code: ExitCode | None) -> None:
    with pytest.raises(VzError) as caught:
        resolve_ctid(paths, text)
    assert caught.value.code == (code or ExitCode.INVALID_PARAMETER_VALUE)


def test_existing_ctids(paths: Paths) -> None:
    for name in ("100.conf", "7.conf", "abc.conf", "103.conf.bak", "ve-basic.conf-sample", "103.mount"):
        (paths.conf_dir / name).write_text("")
    assert sorted(existing_ctids(paths)) == [101, 102]
    assert list(existing_ctids(Paths(paths.root / "elsewhere"))) == []


@pytest.mark.parametrize(
    "text",
    [
        'LOCAL_UID="100000"\n',
        'A="1"\nLOCAL_UID="100000"\nLOCAL_UID="165536"\n',
        "LOCAL_UID=165536 # a comment\n",
        "  LOCAL_UID='200000'\r\n",
        '# LOCAL_UID="1"\nX="2"\n',
        'XLOCAL_UID="7"\n',
        'LOCAL_UID="unclosed\n',
        "",
    ],
)
def test_peek_reads_a_key_as_a_full_parse_does(tmp_path: Path, text: str) -> None:
    path = tmp_path / "101.conf"
    path.write_text(text)
    try:
        full = ConfigFile.load(path).get("LOCAL_UID")
    except VzError:
        full = None  # a malformed file: peek gives None for its malformed value
    assert ConfigFile.peek(path, "LOCAL_UID") == full
    assert ConfigFile.peek(tmp_path / "missing.conf", "LOCAL_UID") is None
