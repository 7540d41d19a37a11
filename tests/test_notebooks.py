"""Every notebook executed with the ci preset (papermill), re-executed by nbval (checked cells must give the
same rounded tables), and its recorded metrics checked against golden bands."""

import json
import subprocess
import sys

import pytest

from workbench.app.report import execute_notebook, notebook_paths

# Golden bands for the ci preset. Figures of the ci mlp_dense and mlp_seeds zoos and generators (the same configs
# as tests/golden.py) use the bands derived from their spread over 10 seeds × 2 threads and 5 seeds × 1 thread
# (tests/bands.md); the others are single-seed bands (seed 0 at 1 and 2 threads) — see tests/bands.md.
GOLDEN = {
    "01_zoo_collection": {
        ("mlp_dense", "test_acc_mean"): (88.5, 92.5),
        ("mlp_dense", "members"): (50, 50),
        ("mlp_seeds", "test_acc_mean"): (86.5, 90.0),
        ("mlp_seeds", "median_l2"): (8.0, 15.0),
        ("resnet_bn", "test_acc_mean"): (25.0, 50.0),
        ("resnet_bn_lowlr", "median_l2"): (0.005, 0.2),
    },
    "02_generator_training": {
        ("mlp_dense", "reconstruction_acc_mean"): (88.5, 92.5),
        ("mlp_dense", "original_acc_mean"): (88.5, 92.5),
    },
    "03_sampling_and_evaluation": {
        ("mlp_dense", "original", "mean"): (88.5, 92.5),
        ("mlp_dense", "generated (ddim-50)", "mean"): (88.5, 92.5),
        ("mlp_dense", "generated (ddim-50)", "within_1pt"): (0.75, 1.0),  # 16 samples here (30 in the sweep)
        ("mlp_dense", "gaussian (per position)", "mean"): (88.5, 92.5),
        ("seeds", "soup (unaligned)", "mean"): (0.0, 25.0),
        ("seeds", "soup (aligned)", "mean"): (77.5, 90.0),
        ("seeds", "original", "mean"): (86.5, 90.0),
    },
    "05_conditional_generation": {
        ("summary", "seen_original_mean"): (78.0, 93.0),
        ("summary", "seen_selected_by_train_mean"): (78.0, 94.0),
        ("summary", "swap_generated_mean"): (20.0, 65.0),
    },
    "06_style_interpolation": {
        ("summary", "style_distance", "original"): (0.45, 0.62),
        ("summary", "style_distance", "generated"): (0.45, 0.70),
        ("summary", "style_distance", "no_lora"): (0.75, 0.92),
        ("summary", "psnr_to_target", "original"): (19.0, 23.5),
        ("summary", "psnr_to_target", "no_lora"): (11.5, 15.0),
        ("summary", "ssim_content", "no_lora"): (0.6, 0.85),
    },
    "07_dataset_conditioned_generation": {  # bands from 6 seeds (tests/bands.md, "D2NWG")
        ("summary", "unseen_generated_mean"): (41.0, 66.0),
        ("summary", "unseen_prototype_mean"): (61.0, 75.0),
        ("summary", "unseen_fewshot_probe_mean"): (57.5, 79.5),
        ("summary", "unseen_random_mean"): (14.5, 24.0),
        ("summary", "unseen_regressor_mean"): (51.5, 73.5),
        ("summary", "unseen_original_mean"): (78.0, 86.0),
        ("summary", "seen_original_mean"): (93.0, 97.0),
        ("summary", "seen_generated_mean"): (72.0, 97.0),
        ("summary", "seen_selected_by_support_mean"): (87.0, 98.5),
    },
    "08_tokenised_generation": {  # bands from 6 seeds (tests/bands.md, "RPG")
        ("summary", "seeds_original_mean"): (52.5, 67.5),
        ("summary", "seeds_pdiff_aligned_mean"): (19.5, 34.5),
        ("summary", "unseen_generated_mean"): (42.5, 57.0),
        ("summary", "unseen_trained_mean"): (80.0, 90.0),
        ("summary", "unseen_nearest_code_mean"): (62.5, 76.5),
        ("summary", "seen_trained_mean"): (79.0, 95.0),
        ("summary", "largest_model_generated_mean"): (39.5, 70.0),
        ("summary", "largest_model_original_mean"): (38.5, 70.0),
    },
    "04_memorization_analysis": {
        ("mlp_dense", "iou", "original", "iou_within"): (0.8, 1.0),
        ("mlp_dense", "iou", "generated", "max_iou_to_original_median"): (0.85, 1.0),
        ("mlp_dense", "novelty_matched_accuracy", "generated"): (88.0, 92.5),
        ("mlp_dense", "l2_nearest_median", "original"): (1e-4, 0.05),
    },
}


@pytest.mark.notebook
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("nb", notebook_paths(), ids=lambda p: p.stem)
def test_notebook(nb, tmp_path):
    run_dir = tmp_path / "run"
    out = tmp_path / nb.name
    # a per-cell limit: a stuck kernel fails the test instead of hanging CI
    execute_notebook(nb, out, {"preset": "ci", "seed": 0, "device": "cpu", "run_dir": str(run_dir)}, timeout=900)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics" / f"{nb.stem}.json").read_text())
    for path, (lo, hi) in GOLDEN.get(nb.stem, {}).items():
        value = metrics
        for k in path:
            value = value[k]
        assert lo <= value <= hi, f"{nb.stem}: {'.'.join(path)} = {value} outside the golden band [{lo}, {hi}]"


def test_every_notebook_is_thin_and_parameterised():
    # imported here: nbformat takes ~2 s to import and only the report needs it
    import nbformat

    for nb in notebook_paths():
        cells = [c for c in nbformat.read(str(nb), as_version=4).cells if c.cell_type == "code"]
        assert "parameters" in cells[0].metadata.get("tags", []), nb.name
        names = [line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line]
        assert {"preset", "seed", "device", "run_dir"} <= set(names), nb.name
        assert all("#" in line for line in cells[0].source.splitlines() if line.strip()), "comment every parameter"
        for c in cells:
            assert not any(line.lstrip().startswith(("def ", "class ")) for line in c.source.splitlines()), nb.name
