"""rrid.paths: relative data paths are read from the project folder, whatever the working directory."""

from pathlib import Path

from rrid import paths
from rrid.config import load_config


def test_a_relative_root_lands_where_the_configs_read_it_from_any_working_directory(tmp_path, monkeypatch):
    """Colab: the clone is /content/rrid-book, the working directory /content. ``prepare --root``
    (paths.resolve) and a config's data.root (load_config) must name the same folder."""
    clone = tmp_path / "content" / "rrid-book"
    (clone / "configs").mkdir(parents=True)
    (clone / "configs" / "run.yaml").write_text("data: {root: data/market1501}\n")
    monkeypatch.setattr(paths, "ROOT", clone)
    for cwd in (tmp_path / "content", clone, clone / "configs"):
        monkeypatch.chdir(cwd)
        assert paths.resolve("data/market1501") == clone / "data" / "market1501"
        assert Path(load_config(clone / "configs" / "run.yaml").data.root) == clone / "data" / "market1501"


def test_the_working_directorys_project_wins_over_the_checkout(tmp_path, monkeypatch):
    own = tmp_path / "mine"
    (own / "configs").mkdir(parents=True)
    monkeypatch.chdir(own)
    assert paths.project_root() == own
    assert paths.resolve("/abs/data") == Path("/abs/data")
    assert paths.resolve("~/x") == Path.home() / "x"


def test_without_any_configs_folder_the_working_directory_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path / "not-a-checkout")
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() == tmp_path
    assert paths.config_project(tmp_path / "my.yaml") == tmp_path
