"""The correlation study end to end at a tiny size (the default size is a benchmark, not a test)."""

import json

from pysens.spde import StudyConfig, run_study


def test_micro_study_writes_its_report_and_figures(tmp_path):
    cfg = StudyConfig(
        out=str(tmp_path),
        checkpoints=3,
        first_step=2,
        train_steps=6,
        widths=(16,),
        n_particles=12,
        n_runs=1,
        n_targets=60,
        n_boot=20,
        white_stride_window=50,
        white_stride_full=500,
        classifier_steps=30,
    )
    report = run_study(cfg, log=lambda *a: None)
    assert (tmp_path / "fig2_metrics_vs_training.png").exists() and (tmp_path / "mu_curves.png").exists()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["configurations"]) == 3
    # paths relative to the report's folder (it may be written in a staging folder and moved), and they resolve there
    assert saved["config"]["out"] == "."
    for row in saved["configurations"]:
        assert not row["path"].startswith("/") and (tmp_path / row["path"]).is_file()
    metrics = saved["configurations"][0]["metrics"]
    for key in (
        "siem_A_first10",
        "siem_B_full",
        "siem_C_first10",
        "mu_eps_mean_first10",
        "mu_particle_mean_full",
        "fid_style",
        "w2_pixel",
        "sw2_pixel",
    ):
        assert key in metrics
    assert report["nfe"]["ratio"] == 0.1
    assert set(saved["correlations"]["siem_A_first10"]["fid_style"]) == {"spearman", "pearson", "kendall"}
