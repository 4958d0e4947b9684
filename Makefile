# efm_ros — pip-world entry points. Every target sets itself up on a fresh machine.
#   make test    set up if needed, run the tests
#   make demo    set up if needed, run the embedded self-improvement demo
#   make bench   print the benchmark numbers
#   make setup   create .venv with every pinned dependency and build the interfaces

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
SITE := $(VENV)/lib/python3.11/site-packages
PYTEST_ARGS ?=

.PHONY: setup test demo bench interfaces clean-venv clean

setup: $(VENV)/.efm-installed

# 1. venv + pinned third-party dependencies (ROS 2 Kilted wheels, torch 2.13.0 CPU, ...)
$(VENV)/.deps-installed: requirements.txt requirements-build.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "efm_ros needs CPython 3.11 (the ROS 2 Kilted wheels are cp311); set PYTHON=..."'
	@echo ">> creating $(VENV) and installing pinned dependencies (a few minutes on a fresh machine)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -r requirements.txt -r requirements-build.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $@

# 2. our package (editable, path-based so efm_ros.msg from the venv joins the source tree), and
#    CMakeLists.txt installed into the venv prefix as colcon installs it: the interfaces in msg/
#    (ament_cmake + rosidl), the ament index entry, lib/efm_ros/<node> and share/efm_ros/.
$(VENV)/.efm-installed: $(VENV)/.deps-installed setup.py CMakeLists.txt package.xml efm_ros/__init__.py \
    $(wildcard msg/*.msg scripts/*_node launch/* config/*) $(shell find models -type f 2>/dev/null)
	@echo ">> installing efm_ros (editable) and building the interfaces in msg/"
	@$(PIP) install --no-deps --no-build-isolation --config-settings editable_mode=compat -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@$(MAKE) --no-print-directory interfaces
	@test -f keys/efm_ros_signing.pem || $(VENV)/bin/efm-ros keygen --out keys | sed 's/^/>> /'
	@touch $@
	@echo ">> ROS 2 tools (ros2 run/launch/pkg) find this install with:"
	@echo "   export AMENT_PREFIX_PATH=$(abspath $(VENV))\$${AMENT_PREFIX_PATH:+:\$$AMENT_PREFIX_PATH}"

interfaces:
	@mkdir -p build
	@cmake -S . -B build/interfaces -DEFM_PIP_WORLD=ON -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) \
	  -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) -DPython3_EXECUTABLE=$(abspath $(PY)) \
	  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release > build/interfaces.log 2>&1 \
	  || { mkdir -p build; cat build/interfaces.log; exit 1; }
	@cmake --build build/interfaces -j2 >> build/interfaces.log 2>&1 || { cat build/interfaces.log; exit 1; }
	@rm -rf $(VENV)/share/efm_ros/models $(VENV)/lib/efm_ros   # no stale bundled model or executable stays
	@cmake --install build/interfaces >> build/interfaces.log 2>&1 || { cat build/interfaces.log; exit 1; }
	@$(PY) -c 'from efm_ros.msg import StepsToGo, PolicyAction, EpisodeEvent' \
	  || { echo "interfaces built but not importable"; exit 1; }

test: setup
	$(PY) -m pytest test $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/efm-ros bench sim
	$(VENV)/bin/efm-ros bench collect
	$(VENV)/bin/efm-ros bench model

clean:
	rm -rf build

clean-venv: clean
	rm -rf $(VENV)

# The embedded self-improvement loop end to end (needs the bundled Stage-1 model in models/efm_sft).
demo: setup
	$(VENV)/bin/efm-ros demo $(DEMO_ARGS)
