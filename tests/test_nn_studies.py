"""Every study runs in its tiny setting and writes index.md with its plots."""

import os

import pytest

from fastgd.nn import studies


@pytest.mark.parametrize("name", list(studies.STUDIES))
def test_study_runs_tiny(name, tmp_path):
    out = tmp_path / name
    result = studies.run_study(name, str(out), tiny=True)
    text = (out / "index.md").read_text()
    assert text.startswith("# ") and "## Measured" in text and "| " in text
    for image in result["images"]:
        assert (out / image).stat().st_size > 1000
        assert f"]({image})" in text
    assert result["numbers"]


def test_main_and_errors(tmp_path, capsys):
    assert studies.main(["learning-rate", "--tiny", "--out", str(tmp_path / "lr")]) == 0
    assert "index.md" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "lr" / "learning_rate.png")
    with pytest.raises(ValueError, match="unknown study 'nope'"):
        studies.run_study("nope", str(tmp_path))
    with pytest.raises(SystemExit):
        studies.main(["nope"])
