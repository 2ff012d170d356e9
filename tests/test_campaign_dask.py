"""A short campaign on a real Dask LocalCluster (two worker processes on loopback): the same
code path as local processes, through the Client's concurrent.futures executor."""

from __future__ import annotations

import json
import os

import pytest

distributed = pytest.importorskip("distributed")

from emu.cli.app import main  # noqa: E402


def test_campaign_on_a_local_cluster(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'strategies = ["random", "hypothesis"]\nchunk = 60\n'
        '[[scenario]]\nimages = ["bug-no-retry", "modern"]\nhosts = "kvm"\n'
    )
    out = tmp_path / "camp"
    cache = tmp_path / "images"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env={"VDSOFUZZ_IMAGE_CACHE": str(cache)},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        argv = ["campaign", str(spec), "--out", str(out), "--time", "4s", "--json"]
        code = main([*argv, "--scheduler", cluster.scheduler_address])
    got = capsys.readouterr()
    assert code == 1, got.err[-3000:]
    lines = [json.loads(x) for x in got.out.splitlines()]
    assert lines[-1]["done"] and lines[-1]["workers"] == 2
    assert os.getpid() not in worker_pids and len(worker_pids) == 2
    rows = {r["scenario"]: r for r in lines[-1]["rows"]}
    assert rows["bug-no-retry/kvm"]["signatures"] >= 1 and rows["modern/kvm"]["hits"] == 0
    # The images reached the workers as bytes, into their own cache directory.
    assert sorted(p.name for p in cache.glob("*/*.so"))
    rec = json.loads((out / "campaign.json").read_text())
    assert rec["sessions"][0]["scheduler"] == cluster.scheduler_address
    assert (out / "hypothesis").is_dir()  # the shared example database
