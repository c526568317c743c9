"""Loss charts a reviewer can read: colours set by an init directive (not Mermaid's pale default),
an epoch-mean line beside the per-step loss, the validation line where the backend measured one,
and a caption naming the lines; rendered by mermaid-cli in headless chromium as a reader sees it
(that test runs where both are installed: see scripts/check-charts). Reports come from
`jobspec apply` against fake_generate (a contract fake of the Gemini API), whose models carry
the snapshots each test gives them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job

pytestmark = pytest.mark.timeout(240)
CHECK = ROOT / "scripts" / "check-charts"
# Two epochs of three steps, and a validation loss at the end of each epoch.
LOSSES = [3.0, 2.0, 2.5, 1.5, 1.0, 1.1]
VALIDATION = [(3, 1, 2.2), (6, 2, 1.7)]


def snapshots(losses):
    return [{"step": n + 1, "epoch": n // 3 + 1, "meanLoss": loss,
             "computeTime": f"2024-05-01T10:00:{n + 1:02d}.000000001Z"}
            for n, loss in enumerate(losses)]


@pytest.fixture
def reports_dir(repo, monkeypatch, cli):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_charts")
    repo.job(name="validated")
    repo.job(name="plain", hyperparameters="batch_size: 3\n  epoch_count: 2")
    with FakeGenerate() as fake:
        for name, validation in (("validated", VALIDATION), ("plain", ())):
            model = fake.models[serve_job(fake, cli, f"jobs/{name}.yaml").split("/")[1]]
            model["tuningTask"]["snapshots"] = snapshots(LOSSES)
            model["tuningTask"]["validationSnapshots"] = [
                {"step": s, "epoch": e, "meanLoss": loss} for s, e, loss in validation]
        result = cli("apply", "jobs/", "--backend", "gemini", "--endpoint", fake.url)
    assert result.code == 0, result.err
    return repo.root / "reports"


def chart_of(markdown: str) -> str:
    found = re.search(r"```mermaid\n(.*?)```", markdown, re.S)
    assert found, markdown
    return found[1]


def test_chart_sets_colours_draws_epoch_means_and_validation(reports_dir):
    markdown = (reports_dir / "validated.md").read_text()
    chart = chart_of(markdown)
    init = json.loads(re.match(r"%%\{init: (.*)\}%%\n", chart)[1])
    variables = init["themeVariables"]["xyChart"]
    assert variables["plotColorPalette"] == "#0072B2, #D55E00, #009E73"
    assert variables["backgroundColor"] == "#ffffff"  # a white card in dark mode too
    assert init["theme"] == "base"
    lines = re.findall(r"^    line \[(.*)\]$", chart, re.M)
    assert lines == ["3, 2, 2.5, 1.5, 1, 1.1",  # each step
                     "2.5, 2.5, 2.5, 1.2, 1.2, 1.2",  # each epoch's mean
                     "2.2, 2.2, 2.2, 1.7, 1.7, 1.7"]  # validation, across its epoch
    assert 'x-axis "step" [1, 2, 3, 4, 5, 6]' in chart
    assert "<sub>Lines: **blue**: loss at each step; **vermillion**: mean loss of each epoch; " \
           "**green**: validation loss at the end of each epoch, drawn across its steps.</sub>" \
        in markdown
    assert ("- **Loss**: training loss 3 → 1.1 over 6 steps (epoch means 2.5 → 1.2); "
            "validation loss 2.2 → 1.7") in markdown


def test_chart_without_validation_has_two_lines_named(reports_dir):
    markdown = (reports_dir / "plain.md").read_text()
    chart = chart_of(markdown)
    assert len(re.findall(r"^    line \[", chart, re.M)) == 2
    assert '"plotColorPalette": "#0072B2, #D55E00"' in chart
    assert "**green**" not in markdown and "**vermillion**: mean loss of each epoch." in markdown


def tools_missing() -> str | None:
    mmdc = os.environ.get("MMDC") or (ROOT / ".venv/mermaid-cli/node_modules/.bin/mmdc")
    if not (shutil.which(str(mmdc)) or shutil.which("mmdc")):
        return "mermaid-cli is not installed (see scripts/check-charts)"
    if not (os.environ.get("CHROMIUM") or shutil.which("chromium")):
        return "chromium is not installed (apt-get install chromium)"
    return None


@pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))
def test_charts_render_legibly_with_mermaid_cli_and_chromium(reports_dir, tmp_path):
    rendered = subprocess.run([sys.executable, str(CHECK), str(reports_dir)],
                              capture_output=True, text=True, timeout=200)
    assert rendered.returncode == 0, rendered.stderr
    assert "check-charts: 2 of 2 charts rendered and legible" in rendered.stdout
    assert "validated.md: chart 1: rendered, 3 lines in their colours" in rendered.stdout

    # Mermaid's default colours (no init directive): the check fails, naming why.
    old = tmp_path / "old.md"
    old.write_text("```mermaid\nxychart-beta\n    x-axis [1, 2]\n    line [2, 1]\n```\n")
    refused = subprocess.run([sys.executable, str(CHECK), str(old)], capture_output=True,
                             text=True, timeout=100)
    assert refused.returncode == 1
    assert "chart 1: no init directive naming the line colours" in refused.stderr
