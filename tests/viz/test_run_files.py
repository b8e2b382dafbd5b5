import numpy as np
import pytest
from PIL import Image

from ddpm.viz.figures import FIGURE_DPI
from ddpm.viz.run_files import load_run, save_run_curves


def test_load_run_reads_config_and_records(run_dir):
    run = load_run(run_dir)
    assert run.setting("schedule", None, ("diffusion",)) == "cosine"
    assert run.setting("steps", None, ("train", "run")) == 2000
    assert run.setting("missing", 7, ("diffusion",)) == 7
    assert len(run.log) == 100 and len(run.evals) == 4


def test_load_run_tolerates_missing_files(tmp_path):
    run = load_run(tmp_path)
    assert run.config == {} and run.log == [] and run.evals == []


def test_load_run_refuses_a_missing_directory_or_bad_toml(tmp_path):
    with pytest.raises(ValueError, match=r"run directory .* does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "config.toml").write_text("[data\n")
    with pytest.raises(ValueError, match=r"config file '.*config\.toml' is not valid TOML"):
        load_run(tmp_path)


def test_save_run_curves_writes_each_picture(run_dir):
    paths = save_run_curves(run_dir)
    assert [p.name for p in paths] == ["curves.png", "eval.png", "schedule.png"]
    assert all(p.parent == run_dir / "figures" for p in paths)
    curves = np.asarray(Image.open(paths[0]))
    assert curves.shape[:2] == (7 * FIGURE_DPI, 10 * FIGURE_DPI) and curves.var() > 0
