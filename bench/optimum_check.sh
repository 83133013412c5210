#!/usr/bin/env bash
# Does an int8-cpu folder load with Optimum's ORTModelForSequenceClassification and run in transformers'
# pipeline("text-classification")? optimum-onnx (0.1.0, the newest) pins transformers<4.58 while hfdistill needs
# transformers 5.x, so the check runs in a separate virtualenv:   bash bench/optimum_check.sh runs/quickstart/student-int8/sst2
set -euo pipefail
folder="$(cd "$1" && pwd)"
venv="${OPTIMUM_VENV:-/tmp/hfdistill-optimum-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0            # the CPU wheel
  "$venv/bin/pip" install -q optimum-onnx onnxruntime==1.32.0
fi
"$venv/bin/python" - "$folder" <<'PY'
import sys
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

folder = sys.argv[1]
model = ORTModelForSequenceClassification.from_pretrained(folder)
classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
print(classify(["a gripping, funny film", "dull and lifeless"]))
PY
