"""The files that travel for ``trust_remote_code`` are exactly ``model_files.REMOTE_CODE_FILES``, and a fresh process
that cannot import ``bayesian_hf`` loads a calibrated model from those files alone, without plotting or Trainer code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import torch
from model_tester import BayesianExpectationModelTester
from transformers.dynamic_module_utils import get_relative_import_files

from bayesian_hf.calibration import LoadedCalibration, make_calibrator
from bayesian_hf.model_files import CALIBRATION_FILENAME, REMOTE_CODE_FILES

PACKAGE = Path(__file__).resolve().parents[2] / "bayesian_hf"
#: modules that must never be imported to load and run a model from its remote code
HEAVY_MODULES = ("bayesian_hf", "matplotlib", "transformers.trainer", "fastapi", "datasets")


def _calibrated_model():
    tester = BayesianExpectationModelTester([[2, 3, 2], [4, 1], [1, 1, 1, 5]], pad_to=16)
    config, batch = tester.prepare_config_and_inputs()
    model = tester.create_model(config).eval()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(60, config.num_labels))
    labels = rng.integers(0, config.num_labels, size=60)
    model.set_calibration(LoadedCalibration(make_calibrator("temperature").fit(logits, labels), None, {}))
    return model, batch


def test_the_relative_imports_of_the_modeling_file_are_the_remote_code_files():
    found = {Path(p).name for p in get_relative_import_files(str(PACKAGE / "modeling_bayesian_expectation.py"))}
    assert sorted(found | {"modeling_bayesian_expectation.py"}) == list(REMOTE_CODE_FILES)


def test_a_fresh_process_loads_the_model_from_the_remote_code_files_alone(tmp_path):
    model, batch = _calibrated_model()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    assert sorted(p.name for p in saved.glob("*.py")) == list(REMOTE_CODE_FILES)
    only = tmp_path / "only"  # the weights, the config, the calibrator and the remote code: nothing else
    only.mkdir()
    for name in (*REMOTE_CODE_FILES, "config.json", "model.safetensors", CALIBRATION_FILENAME):
        shutil.copy(saved / name, only / name)
    with torch.no_grad():
        expected = model(**batch)
    site_packages = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    # -I -S: no current folder, no PYTHONPATH, no .pth files (so not the editable install of bayesian_hf);
    # the site-packages folders are put on the path by hand
    script = textwrap.dedent(
        f"""
        import importlib.util, json, os, sys
        sys.path.extend({site_packages!r})
        assert importlib.util.find_spec("bayesian_hf") is None, "bayesian_hf must not be importable here"
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(only)!r}, trust_remote_code=True).eval()
        assert model.calibration is not None, "calibration.json must load with the remote code"
        batch = {{k: torch.tensor(v) for k, v in json.loads({json.dumps({k: v.tolist() for k, v in batch.items()})!r}).items()}}
        with torch.no_grad():
            out = model(**batch)
        files = [getattr(m, "__file__", None) or "" for n, m in list(sys.modules.items())
                 if n.startswith("transformers_modules.")]
        code = sorted({{os.path.basename(f) for f in files if f.endswith(".py")}} - {{"__init__.py"}})
        heavy = sorted({{m for m in sys.modules for h in {HEAVY_MODULES!r} if m == h or m.startswith(h + ".")}})
        print(json.dumps({{"probs": out.probs.tolist(), "calibrated": out.calibrated_probs.tolist(), "code": code,
                          "heavy": heavy}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert set(got["code"]) <= set(REMOTE_CODE_FILES) and "modeling_bayesian_expectation.py" in got["code"]
    torch.testing.assert_close(torch.tensor(got["probs"]), expected.probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(got["calibrated"]), expected.calibrated_probs, rtol=0, atol=1e-6)
