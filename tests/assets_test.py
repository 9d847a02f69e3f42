"""gkdrl.assets' command line: `locate NAME` prints the path alone."""

import pathlib

from gkdrl import assets


def test_locate_one_name_prints_the_path_alone(monkeypatch, capsys,
                                               tmp_path):
  path = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
  monkeypatch.setattr(assets, "locate", lambda name: path)
  assert assets.main(["locate", "smollm2"]) == 0
  out = capsys.readouterr().out
  assert out == f"{path}\n"
  assert pathlib.Path(out.strip()) == path  # usable as $(... locate ...)


def test_locate_without_names_lists_names_and_paths(monkeypatch, capsys,
                                                    tmp_path):
  monkeypatch.setattr(assets, "locate", lambda name: tmp_path / name)
  assert assets.main(["locate"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == [f"{n}\t{tmp_path / n}" for n in sorted(assets.ASSETS)]


def test_locate_an_unknown_name_fails(capsys):
  assert assets.main(["locate", "gpt5"]) == 1
  assert "name='gpt5'" in capsys.readouterr().err
