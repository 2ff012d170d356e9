"""Campaigns: spec validation (before any work, naming the line), signatures that identify
a bug across seeds, the findings store, checkpoints and the `findings` listing."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import needs_running_vdso

from emu.campaign import spec as specmod
from emu.campaign.checkpoint import Checkpoints, ShardState
from emu.campaign.shards import Chunk, Shard
from emu.campaign.signature import signature
from emu.campaign.store import FindingStore
from emu.campaign.warm import ChunkResult
from emu.cli.app import main
from emu.engine.scenario import Scenario
from emu.search.fuzz import Fuzzer
from emu.search.random import RandomWalk

GOOD = '[[scenario]]\nimages = ["modern"]\nhosts = ["kvm"]\n'

BAD = [
    ('strategies = ["random"]\n' + GOOD + "params = { nosuch = 1 }\n", 5, "no parameter 'nosuch'"),
    ('strategies = ["random", "exhaustive"]\n' + GOOD, 1, "unknown strategy 'exhaustive'"),
    ('[[scenario]]\nimages = ["modern"]\nhosts = ["kvm", "nohost"]\n', 3, "nohost"),
    (
        '[[scenario]]\nimages = ["modern", "nothere"]\nhosts = ["kvm"]\n',
        2,
        "unknown image 'nothere'",
    ),
    (GOOD + "vcpus = []\n", 4, "vcpus is empty"),
    ('[[scenario]\nimages = ["modern"]\n', 1, "not TOML"),
    (GOOD + "vcpus = [2, 99]\n", 4, "--vcpus must be 1..64"),
    (GOOD + "colour = 1\n", 4, "unknown scenario key 'colour'"),
    ("seeds = 0\n" + GOOD, 1, "seeds is a count"),
    ('[[scenario]]\nimages = ["modern"]\n', 1, "needs images and hosts"),
    (GOOD + 'images2 = ["x/*.nomatch"]\n', 4, "unknown scenario key"),
    ('[[scenario]]\nimages = ["nomatch-*.so"]\nhosts = ["kvm"]\n', 2, "no file matches"),
    (GOOD + "timekeeping = [0, 2]\n", 4, "timekeeping needs a real vDSO"),
    (GOOD + 'clock = "realtime"\n', 4, "takes no clock id"),
    (GOOD + 'cpu = "pentium"\n', 4, "unknown cpu 'pentium'"),
    ('[[scenario]]\nimages = ["junk.so"]\nhosts = ["kvm"]\n', 2, "junk.so"),
    (GOOD + 'writers = ["junk.so"]\n', 4, "not an ELF file"),
    (GOOD + 'writers = ["no-such-writer"]\n', 4, "no writer 'no-such-writer'"),
    (GOOD + "max_insns = [0]\n", 4, "--max-insns"),
]


@pytest.mark.parametrize(("text", "line", "what"), BAD)
def test_spec_errors_name_the_line_before_any_work(tmp_path, capsys, text, line, what):
    (tmp_path / "junk.so").write_bytes(b"not an ELF")
    p = tmp_path / "spec.toml"
    p.write_text(text)
    out = tmp_path / "out"
    assert main(["campaign", str(p), "--out", str(out), "--time", "5s"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{p}:{line}:" in err and what in err
    assert not out.exists()  # nothing started


def test_spec_product_and_defaults(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_text(
        'strategies = ["pct"]\nseeds = [3, 4]\n[[scenario]]\nimages = ["modern", "bug-no-retry"]\n'
        'hosts = "kvm"\nvcpus = [2, 3]\nparams = { updates = [1, 2] }\n'
        '[[scenario]]\nimages = "modern"\nhosts = "xen"\n'
    )
    s = specmod.load(p)
    assert len(s.scenarios) == 2 * 2 * 2 + 1
    assert s.strategies == ("pct",) and s.seeds == (3, 4)
    assert {sc.host_params["updates"] for sc in s.scenarios[:8]} == {1, 2}
    assert s.scenarios[-1] == Scenario(image="modern", host="xen")


def test_spec_writers_and_hang_limit_are_axes(tmp_path):
    (tmp_path / "w.so").write_bytes(vdso_blobs_writer("writer-seqlock-x86_64-gcc-O2"))
    p = tmp_path / "spec.toml"
    p.write_text(GOOD + 'writers = ["", "writer-seed-memcpy", "w.so"]\nmax_insns = 5000\n')
    s = specmod.load(p)
    assert [sc.writer for sc in s.scenarios] == [
        "",
        "writer-seed-memcpy",
        str((tmp_path / "w.so").resolve()),
    ]
    assert {sc.max_insns for sc in s.scenarios} == {5000}


def vdso_blobs_writer(name: str) -> bytes:
    import vdso_blobs

    return vdso_blobs.path(f"images/{name}.so").read_bytes()


def test_no_spec_is_the_catalog():
    from emu.search.catalog import load

    s = specmod.load(None)
    assert [sc for sc in s.scenarios] == [e.scenario for e in load()]
    assert s.expected[0] in ("pass", "violation") or s.expected[0].startswith("violation")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("45", 45)]
)
def test_durations(text, seconds):
    assert specmod.parse_duration(text) == seconds


def _first_signature(image: str, host: str, seed: int):
    """The signature of the shrunk finding of the first violating random run of `seed`."""
    f = Fuzzer(Scenario(image=image, host=host))
    for i in range(3000):
        run, vs = f.run(RandomWalk(seed * 1_000_003 + i))
        if vs:
            found = f.finding_of(tuple(run.choices), vs[0].oracle, "random", seed)
            assert found is not None
            run2, vs2 = f.replay(found.schedule.choices)
            v = next(x for x in vs2 if x.oracle == found.oracle)
            return signature(run2, v.oracle, v.reads, f.executor, image), found
    raise AssertionError(f"no violation of {image}/{host} in 3000 runs of seed {seed}")


@pytest.mark.parametrize(
    ("image", "host"), [("modern", "kvm-legacy-copy"), ("bug-no-barrier", "kvm")]
)
def test_same_bug_other_seed_same_signature(image, host):
    a, fa = _first_signature(image, host, 1)
    b, fb = _first_signature(image, host, 2)
    assert fa.schedule.choices != fb.schedule.choices or fa.schedule.seed != fb.schedule.seed
    assert a.id == b.id and a.sites  # a torn read: its load sites are named


def test_two_bugs_two_signatures():
    torn, _ = _first_signature("modern", "kvm-legacy-copy", 0)
    warp, _ = _first_signature("modern", "unsynced-tsc", 0)
    no_retry, _ = _first_signature("bug-no-retry", "kvm", 0)
    no_odd, _ = _first_signature("bug-no-odd-check", "kvm", 0)
    assert len({torn.id, warp.id, no_retry.id, no_odd.id}) == 4
    # Not only the image tells the two reader bugs apart: the loads differ.
    assert no_retry.sites != no_odd.sites
    assert warp.oracle == "monotonic" and not warp.sites


def test_store_keeps_the_smallest_finding_once(tmp_path):
    store = FindingStore(tmp_path)
    sig = {"oracle": "consistent", "image": "x", "sites": [], "steps": []}
    big = {"choices": [[1, "host"], [5, "t1"]], "violation": {"oracle": "consistent"}}
    small = {"choices": [[3, "host"]], "violation": {"oracle": "consistent"}}
    assert store.save("abc", sig, big, 0)
    assert store.save("abc", sig, small, 0)
    assert not store.save("abc", sig, big, 0)
    files = list((tmp_path / "findings").iterdir())
    assert [p.name for p in files] == ["abc.json"]  # no temporary file left, one per signature
    assert json.loads(files[0].read_text())["choices"] == [[3, "host"]]


def test_an_unsynced_checkpoint_is_in_place_before_its_sync(tmp_path):
    """The driver renames a checkpoint into place (what a kill of the campaign process
    needs) before it hands out the next chunk, and fsyncs it after."""
    shard = Shard(0, "random", 0)
    ckpt = Checkpoints(tmp_path, [shard])
    ckpt.states[shard.key].apply(ChunkResult(Chunk(shard, 0, 0, 100), 100), 1.0)
    ckpt.save(shard.key, sync=False)
    path = tmp_path / "checkpoints" / f"{shard.key}.json"
    assert json.loads(path.read_text())["done_below"] == 1
    assert ckpt.unsynced == {path}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    path.unlink()  # a file replaced or gone since is not an error: nothing left to sync
    ckpt.sync()
    assert not ckpt.unsynced
    assert Checkpoints(tmp_path, [shard]).states[shard.key].done_below == 0


def test_checkpoint_counts_each_run_once_and_requeues_the_rest():
    shard = Shard(0, "random", 0)
    st = ShardState(shard.key, issued=3)
    st.apply(ChunkResult(Chunk(shard, 1, 100, 200), 200, hits={"s": 2}), 1.0)
    st.apply(ChunkResult(Chunk(shard, 0, 0, 100), 40, hits={"s": 1}), 2.0)
    assert st.schedules == 140 and st.hits == {"s": 3} and st.first_seen == {"s": 1.0}
    pending = st.pending(shard, 100)
    assert [(c.number, c.start, c.end) for c in pending] == [(0, 40, 100), (2, 200, 300)]
    st.apply(ChunkResult(pending[0], 100), 3.0)
    assert st.done_below == 2 and st.schedules == 200


def test_findings_lists_a_short_campaign(tmp_path, capsys):
    p = tmp_path / "spec.toml"
    p.write_text(
        'strategies = ["random"]\nchunk = 50\n'
        '[[scenario]]\nimages = "bug-no-retry"\nhosts = "kvm"\n'
    )
    out = tmp_path / "camp"
    assert (
        main(["campaign", str(p), "--out", str(out), "--time", "2s", "--workers", "1", "--json"])
        == 1
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["done"] and lines[-1]["signatures"] >= 1
    assert (out / "report.md").read_text().startswith("# Campaign")
    assert main(["findings", str(out), "--json"]) == 1
    listed = json.loads(capsys.readouterr().out)["signatures"]
    assert len(listed) == lines[-1]["signatures"]
    first = listed[0]
    assert first["replay"] == f"vdsofuzz replay {first['file']}" and "trace" in first["trace"]
    assert main(["replay", first["file"]]) == 1  # the stored finding reproduces
    capsys.readouterr()
    assert main(["findings", str(out), "--html"]) == 1
    page = capsys.readouterr().out
    assert "<svg" in page and "polyline" in page and first["id"] in page
    assert main(["findings", str(out), "--markdown"]) == 1
    assert first["id"] in capsys.readouterr().out


def test_findings_of_no_campaign_is_bad_input(tmp_path, capsys):
    assert main(["findings", str(tmp_path)]) == 2
    assert "no campaign here" in capsys.readouterr().err


def test_a_different_spec_for_the_same_dir_is_refused(tmp_path, capsys):
    p = tmp_path / "spec.toml"
    p.write_text('strategies = ["random"]\nchunk = 20\n' + GOOD)
    out = tmp_path / "camp"
    assert (
        main(["campaign", str(p), "--out", str(out), "--time", "1s", "--workers", "1", "--json"])
        == 0
    )
    p.write_text('strategies = ["pct"]\n' + GOOD)
    capsys.readouterr()
    assert main(["campaign", str(p), "--out", str(out), "--time", "1s", "--json"]) == 2
    assert "holds another campaign" in capsys.readouterr().err


def test_images_travel_as_bytes(tmp_path):
    from emu.campaign.images import load_ref, materialize, pack

    ref = pack("modern")
    path = materialize(ref, tmp_path)
    assert path.read_bytes() == ref.files[0][1] and path.parent.name == ref.sha256
    stamp = path.stat().st_mtime_ns
    assert materialize(ref, tmp_path) == path and path.stat().st_mtime_ns == stamp  # kept
    path.write_bytes(b"half")  # a worker died while writing it: written again
    assert materialize(ref, tmp_path).read_bytes() == ref.files[0][1]
    bad = dataclasses.replace(ref, files=((ref.files[0][0], b"tampered"),))
    with pytest.raises(ValueError, match="do not match their sha256"):
        materialize(bad, tmp_path)
    img = load_ref(ref, None)
    assert img.name == "modern"


def test_spec_paths_and_globs_are_relative_to_the_spec(tmp_path):
    from emu.campaign.images import pack
    from emu.image.loader import resolve

    (tmp_path / "imgs").mkdir()
    blob = resolve("modern")[0].read_bytes()
    for name in ("a.so", "b.so"):
        (tmp_path / "imgs" / name).write_bytes(blob)
    p = tmp_path / "spec.toml"
    p.write_text('[[scenario]]\nimages = ["imgs/*.so", "imgs/a.so"]\nhosts = "kvm"\n')
    s = specmod.load(p)
    images = [sc.image for sc in s.scenarios]
    assert images == [str(tmp_path / "imgs" / n) for n in ("a.so", "b.so", "a.so")]
    assert pack(images[0]).sha256 == pack(images[2]).sha256


@needs_running_vdso
def test_a_dump_directory_travels_whole(tmp_path):
    from emu.campaign.images import load_ref, materialize, pack
    from emu.image.loader import load

    dump = tmp_path / "dump"
    assert main(["dump-vdso", str(dump)]) == 0
    ref = pack(str(dump))
    where = materialize(ref, tmp_path / "cache")
    sent = sorted(str(p.relative_to(dump)) for p in dump.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(where)) for p in where.rglob("*") if p.is_file()) == sent
    assert load_ref(ref, None).sha256 == load(str(dump)).sha256


def test_residual_risk_is_pcts_bound():
    from fractions import Fraction

    from emu.campaign.status import residual
    from emu.search.pct import guarantee

    assert residual(0, 3, 40, 3) is None
    p = float(guarantee(3, 40, 3))
    assert residual(1000, 3, 40, 3) == pytest.approx((1 - p) ** 1000)
    assert residual(2000, 3, 40, 3) < residual(1000, 3, 40, 3) < 1
    assert residual(10, 3, 40, 1) == pytest.approx((1 - float(Fraction(1, 3))) ** 10)


def test_status_table_and_json_line():
    from rich.console import Console

    from emu.campaign.status import Row, Snapshot, table

    row = Row("modern/kvm", 1200, 40.0, 3, 1, 77, 0.5, 0.25, "pass")
    snap = Snapshot(65.0, 115.0, 2, 2, 1, 1200, 40.0, 1, 77, [row])
    console = Console(record=True, width=160)
    console.print(table(snap))
    text = console.export_text()
    assert "1.1 min elapsed, 1.9 min left" in text and "1 re-queued" in text
    assert "modern/kvm" in text and "~0.25" in text and "0.5" in text
    line = json.loads(snap.json_line())
    assert line["rows"][0]["coverage"] == 77 and line["requeued"] == 1 and not line["done"]
