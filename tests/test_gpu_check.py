"""benchmarks/gpu_check.py --smoke: every section of the GPU check runs on the CPU at tiny sizes
and writes its report, so the one run on a lent GPU is a prepared one."""

import json
import math
import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_runs_every_section_at_smoke_sizes(tmp_path):
    out = tmp_path / "gpu_check"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), str(out), "--smoke"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    figures = json.loads((out / "figures.json").read_text())
    failed = {name: f["error"] for name, f in figures.items() if isinstance(f, dict) and "error" in f}
    assert failed == {}
    for key in ("methods_fp32", "methods_bf16"):
        rows = figures[key]["rows"]
        assert list(rows) == ["finetune", "fnp", "l2sp", "delta", "bss", "dr_tune", "co_tuning", "randreg_uniform",
                              "randreg_normal", "randreg_global", "randreg_cp", "adarand_no_intra", "adarand_no_inter",
                              "adarand", "core_tuning", "uot"]
        assert rows["finetune"]["ratio_to_ft"] == 1.0
        assert all(math.isfinite(row["ms_per_step"]) and row["ms_per_step"] > 0 for row in rows.values())
    assert set(figures["vit"]["rows"]) == {"finetune", "adarand"}
    assert set(figures["compile"]) == {"finetune", "adarand"}
    assert all(v > 0 for v in figures["pipeline"]["img_per_s"].values())
    assert figures["end_to_end"]["process_group"]["world"] == 1
    for name in ("demo", "resnet"):
        results = json.loads((out / f"results_{name}.json").read_text())
        assert 0.0 <= results["test_accuracy"] <= 1.0
    report = (out / "report.md").read_text()
    for title in ("## methods_fp32", "## methods_bf16", "## vit", "## compile", "## data pipeline", "## end to end"):
        assert title in report, title
