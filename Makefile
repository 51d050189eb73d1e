# The project's single entry point.
#   make book        build the HTML book, every chapter executed (quick mode on a CPU)
#   make test        run the unit tests, build the book (every chapter executed in quick mode, an error
#                    fails the build) and check the built pages in headless Chromium
#   make test-full   full mode on the CPU: every chapter under nbval with RRID_MODE=full RRID_SMOKE=1
#                    (ResNet-50 at 384 x 128 on market1501-mini, the smallest amounts), and the README's
#                    Colab snippet run end to end; CI (.ci/run) runs make test, then make test-full
# Each creates or reuses a local virtual environment in .venv.

VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.14.1 torchvision==0.29.1
export RRID_MODE ?= quick
export TQDM_DISABLE ?= 1
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0
# static pages (rrid.viz.is_static): live plots draw once, at the end, and rrid.viz.interact
# embeds its outputs, in the built book and under nbval
export RRID_LIVEPLOT ?= static
# idle OpenMP threads sleep instead of spinning, so a busy CPU does not stall quick mode
# (benchmarks/contention.py); read once when torch loads, so it is set for every process here
export OMP_WAIT_POLICY ?= PASSIVE

# The chapters' temp folders: each run of the chapters (book build, nbval) gets an empty TMPDIR of its
# own, and a file left in it afterwards fails the run. A chapter removes what it writes there (once,
# chapter 7 left 650 MB in /tmp at every run, until the disk of the CI machine filled up). Two names
# are the libraries' own, one per temp folder, reused and never piling up: torch's (empty) compile
# cache torchinductor_USER and onnxruntime's 51-byte telemetry session file .ses.
# $(call in_scratch,NAME,COMMAND) runs COMMAND with TMPDIR the empty folder $(SCRATCH)/NAME, then checks it.
SCRATCH := _build/tmp
in_scratch = rm -rf $(SCRATCH)/$(1) && mkdir -p $(SCRATCH)/$(1) && TMPDIR=$(CURDIR)/$(SCRATCH)/$(1) $(2) && { \
  left="$$(ls -A $(SCRATCH)/$(1) | grep -vx -e '\.ses' -e 'torchinductor_.*')"; \
  test -z "$$left" || { echo "error: the chapters left files in their temp folder $(SCRATCH)/$(1)" \
  "(a chapter must remove what it writes there):" $$left; exit 1; }; }

.PHONY: venv mathjax prepare prepare-heads prepare-quick book test test-quick test-full test-serial unit nbval html chromium clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[book,test,onnx]"
	touch $@

# One-time preparation outside the notebooks' cells: the quick ablation's backbone, feature cache and
# the trained heads the chapters draw, and the end-to-end quick Ours-F that chapter 8 loads
# (rrid.book.prepare; seconds when they are already built)
prepare: venv prepare-heads prepare-quick
	$(PY) -m rrid prepare-book

# its two independent halves, which make test runs side by side: the head-only chain (its backbone
# trains on one thread) and the end-to-end quick model of chapter 8 (two threads)
prepare-heads: venv
	$(PY) -m rrid prepare-book --heads-only

prepare-quick: venv
	$(PY) -m rrid prepare-book --quick-only

book: venv mathjax prepare
	$(call in_scratch,book,$(VENV)/bin/jupyter-book build --all .)

# MathJax for the book's equations, served from the build so that pages typeset offline: npm's
# mathjax package (pinned), unpacked into the git-ignored .mathjax/mathjax, which _config.yml copies
# to _build/html/_static/mathjax. Installed once per version (the stamp .mathjax/.mathjax-VERSION);
# a half-done unpack never takes its place.
MATHJAX ?= 3.2.2
mathjax: .mathjax/.mathjax-$(MATHJAX)

.mathjax/.mathjax-$(MATHJAX):
	@command -v npm >/dev/null 2>&1 || { echo "error: npm is missing: it installs MathJax for the book" \
	  "(Debian/Ubuntu: apt-get install npm; macOS: brew install node)"; exit 2; }
	rm -rf .mathjax.tmp && mkdir -p .mathjax.tmp
	npm pack --silent --pack-destination .mathjax.tmp mathjax@$(MATHJAX) >/dev/null
	tar -xzf .mathjax.tmp/mathjax-$(MATHJAX).tgz -C .mathjax.tmp
	mv .mathjax.tmp/package/es5 .mathjax.tmp/mathjax && cp .mathjax.tmp/package/LICENSE .mathjax.tmp/mathjax/
	rm -rf .mathjax.tmp/package .mathjax.tmp/*.tgz && touch .mathjax.tmp/.mathjax-$(MATHJAX)
	rm -rf .mathjax && mv .mathjax.tmp .mathjax

# The built-page test needs Chromium. As root (a CI container) Debian's package is installed;
# otherwise nothing is installed: the test skips with a one-line hint (and fails under CI=true).
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the built-page test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "chromium is missing (the built-page test will skip): sudo apt-get install chromium" \
	       "(Ubuntu: chromium-browser; macOS: brew install --cask chromium)"; \
	fi

# the page checks' own tests (tests/test_page_checks.py) open small pages in Chromium, one with MathJax;
# the full-mode smoke tests (marked full_mode) run in make test-full
unit: venv chromium mathjax
	$(PY) -m pytest -q tests -m "not book_html and not full_mode"

# every chapter under nbval in quick mode (make test checks quick mode through the book build instead,
# which executes every chapter and fails on an error)
nbval: venv prepare
	$(call in_scratch,nbval,$(PY) -m pytest -q --nbval-lax --nbval-cell-timeout=300 -p no:randomly book/)

# Full mode on the CPU (rrid.book.smoke): every chapter under nbval with RRID_MODE=full RRID_SMOKE=1,
# then the README's Colab snippet (tests marked full_mode). The chapters read the head-only models
# that prepare-heads builds (seconds when make test built them before).
test-full: venv prepare-heads
	@echo "make test-full: every chapter under nbval in full mode's smoke setting, then the README's Colab snippet"
	$(call in_scratch,full,RRID_MODE=full RRID_SMOKE=1 \
	  $(PY) -m pytest -q --nbval-lax --nbval-cell-timeout=300 -p no:randomly book/)
	RRID_MODE=full RRID_SMOKE=1 $(PY) -m pytest -q -p no:randomly tests -m full_mode

html: book chromium
	$(PY) -m pytest -q -rs tests -m book_html

# The tests: first two jobs at a time on the project's 2-core machine (the two halves of the
# preparation side by side, the unit tests in the core left over, then the book build, which
# executes every chapter in quick mode and fails on an error, and the built-page checks; each job's
# output is printed when it ends), then full mode on the CPU (test-full). Quick mode is checked by
# the build; nbval runs every chapter in full mode's smoke setting. `make test-serial` runs the same
# parts one after the other.
test:
	@echo "make test: preparation, unit tests, the book build and its page checks, two at a time (output per part, when it ends); then make test-full"
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-quick
	@$(MAKE) --no-print-directory test-full

test-quick: unit html

test-serial: unit html test-full

clean:
	rm -rf _build .mathjax .mathjax.tmp
