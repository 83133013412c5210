"""Quantization of a finished model folder: bitsandbytes (LLM.int8, NF4/FP4) and int8 for CPU serving.

Plain functions; the `quantize` stage (`hfdistill/stages/quantize.py`) strings them together.

bitsandbytes 0.50 on CPU, measured (see the stage's docs and `bench/quantize.py`):
- On CPUs with AVX512-BF16 the first inference forward of a `Linear4bit` repacks its weights for a bf16 kernel
  (`_convert_weight_packed_for_cpu`). That repacking asserts `out_features % 32 == 0` and needs
  `in_features % blocksize == 0`, so a classifier with 2 outputs crashes deep in bitsandbytes; the kernel computes
  in bf16, so only `compute_dtype: float32` is safe there; and the repacking stores absmax in bf16, so a model
  saved *after* a forward gets back only a lossy, best-effort inverse of its weights.
- Hence, always: 4-bit never touches modules whose shape the repacking cannot take (whatever CPU quantizes,
  the saved folder may be loaded on an AVX512-BF16 one), compute dtype defaults to float32, and a model is saved
  before it has run any forward (`save_bnb` refuses a repacked model).
- bitsandbytes has no fast CPU kernels: on CPU its models are *slower* than fp32. They buy memory and disk.
- Pruning can leave weightless linear layers (a layer with no heads: attention output 0 → hidden; no FFN neurons:
  hidden → 0 → hidden). bitsandbytes cannot quantize them (8-bit divides by zero on load, 4-bit fails on the first
  forward); ONNX Runtime's quantizer fails on an empty FFN, and its MatMulInteger with no weights leaves its output
  unwritten, so an empty attention adds leftover memory to the hidden state (logits off by 0.9-3.6, measured). Every
  method keeps them in full precision (they hold only a bias). Prune with `multiple_of: 64` so that every layer's
  sizes fit the 4-bit kernels (rows % 32, columns % 64).

int8-cpu: dynamic int8 quantization for CPU serving. Measured on all-MiniLM-L6-v2 fine-tuned on SST-2 (150 steps,
dev acc 0.7959), bs 1, SST-2 dev sentences (~24 tokens), 1 thread, variants timed interleaved on this shared CPU:
  torch fp32 16–30 ms · torch.ao `quantize_dynamic` 13.2 ms vs 16.2 (1.2×), acc 0.7810 (98.1 %), and no save format
  but a pickle of the module · ONNX Runtime fp32 16.0 ms vs 30.6 · ORT dynamic int8 per-tensor 7.8 ms (3.96×) but
  acc 0.7718 (97.0 %) · ORT dynamic int8 per-channel 8.0 ms (3.83×), acc 0.7856 (98.7 %, 98.7 % agreement).
  (onnxruntime.transformers' BERT graph fusions changed neither speed nor accuracy here.)
So int8-cpu = ONNX export + ONNX Runtime dynamic quantization, per-channel weights by default, embeddings in int8
too (4× smaller file, same accuracy); optional extra `hfdistill[onnx]`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch

from hfdistill.errors import ModelError
# Loading what this module writes lives in hfdistill.models (every layer that loads models needs it); re-exported
# here for callers that quantize and reload.
from hfdistill.models.formats import (ADAPTER_DIR, INT8_CPU_FILE, INT8_CPU_META, Int8CpuModel,  # noqa: F401
                                      _session, bnb_device_map, has_adapter, is_int8_cpu_folder, load_bnb,
                                      load_int8_cpu, model_device,
                                      load_with_adapter, require_onnxruntime, weight_bytes)

BNB_METHODS = ("bnb-8bit", "bnb-4bit")
INT8_CPU = "int8-cpu"
METHODS = BNB_METHODS + (INT8_CPU,)

#: The bf16 CPU kernel packs 4-bit weights in blocks of 32 output rows.
CPU_PACK_BLOCK_N = 32
#: bitsandbytes' 4-bit quantization block size (absmax per 64 weights) on CPU.
BNB_4BIT_BLOCKSIZE = 64
#: Classification heads kept in full precision by default: a few thousand weights, most of the accuracy.
HEAD_MODULES = ("classifier", "score")
#: A linear layer inside the encoder's layers (BERT `bert.encoder.layer.3.…`, DistilBERT `….transformer.layer.3.…`).
ENCODER_LAYER = re.compile(r"(^|\.)layer\.\d+\.")


CPU_SLOWER_NOTE = ("bitsandbytes has no fast CPU kernels: on CPU this model runs slower than its fp32 parent. "
                   "It saves memory and disk; for fast CPU serving use `method: int8-cpu`.")


# ------------------------------------------------------------------------------------------------ bitsandbytes

@functools.lru_cache(maxsize=1)
def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 (where bitsandbytes switches 4-bit inference to its bf16 kernel)."""
    try:
        from bitsandbytes.functional import has_avx512bf16

        return bool(has_avx512bf16())
    except Exception:  # an older bitsandbytes, or no native library: read the flags ourselves
        try:
            return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False


def require_bitsandbytes() -> Any:
    try:
        import bitsandbytes
    except ImportError:
        raise ModelError("bnb methods need bitsandbytes: pip install 'bitsandbytes>=0.45'") from None
    return bitsandbytes


def linear_shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """`{module name: (out_features, in_features)}` of every linear layer."""
    return {name: (m.out_features, m.in_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) or (hasattr(m, "out_features") and hasattr(m, "in_features")
                                                  and hasattr(m, "weight"))}


def empty_linear_modules(model: torch.nn.Module) -> list[str]:
    """Linear layers with no weights (a pruned layer whose heads or FFN neurons were all removed). They compute
    only their bias; bitsandbytes cannot quantize them (8-bit: division by zero on load, 4-bit: a reshape error
    on the first forward), so they always stay in full precision."""
    return [name for name, (n, k) in linear_shapes(model).items() if n * k == 0]


def quantized_fraction(shapes: dict[str, tuple[int, int]], quantized: Iterable[str]) -> dict[str, Any]:
    """Of the encoder's linear weights (by count of values, `shapes` as from `linear_shapes`), how many are stored
    quantized: `quantized_weight_fraction` (what the card reports), with both counts."""
    done = set(quantized)
    encoder = {name: n * k for name, (n, k) in shapes.items() if ENCODER_LAYER.search(name)}
    total = sum(encoder.values())
    kept = sum(v for name, v in encoder.items() if name in done)
    return {"quantized_weight_fraction": round(kept / total, 6) if total else 0.0,
            "encoder_linear_weights": total, "quantized_encoder_linear_weights": kept}


def unsafe_4bit_cpu_modules(model: torch.nn.Module) -> list[str]:
    """Linear layers the AVX512-BF16 4-bit path cannot take (output rows not a multiple of 32, or input
    features not a multiple of the block size): a classifier head, and in a pruned model any odd-sized layer."""
    return [name for name, (n, k) in linear_shapes(model).items()
            if n % CPU_PACK_BLOCK_N or k % BNB_4BIT_BLOCKSIZE]


def _matches(pattern: str, name: str) -> bool:
    # The rule transformers applies to `llm_int8_skip_modules` (quantizers_utils.should_convert_module).
    from transformers.quantizers.quantizers_utils import should_convert_module

    return not should_convert_module(name, [pattern])


@dataclass
class BnbPlan:
    """What will be quantized and how: the `BitsAndBytesConfig` and why its skips and dtype were chosen."""

    method: str
    config: Any                       # transformers.BitsAndBytesConfig
    skip_modules: list[str]           # everything kept in full precision
    added_for_cpu: list[str]          # of those, added because the 4-bit CPU path cannot take their shape
    quantized_modules: list[str]
    compute_dtype: Optional[str]
    avx512_bf16: bool
    notes: list[str] = field(default_factory=list)
    empty_modules: list[str] = field(default_factory=list)  # weightless layers, always kept (see empty_linear_modules)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)  # every linear layer of the parent

    def facts(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        keep = ("load_in_8bit", "load_in_4bit", "llm_int8_threshold", "llm_int8_skip_modules",
                "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype")
        return {"method": self.method, "bnb_config": {k: cfg[k] for k in keep if k in cfg},
                "skip_modules": self.skip_modules, "skipped_for_cpu_4bit": self.added_for_cpu,
                "skipped_empty": self.empty_modules,
                "quantized_linear_layers": len(self.quantized_modules), "cpu_avx512_bf16": self.avx512_bf16,
                **quantized_fraction(self.shapes, self.quantized_modules), "notes": self.notes}


def plan_bnb(method: str, model: torch.nn.Module, *, quant_type: str = "nf4", double_quant: bool = True,
             compute_dtype: str = "auto", skip_modules: Optional[list[str]] = None,
             int8_threshold: float = 6.0, avx512_bf16: Optional[bool] = None) -> BnbPlan:
    """Map the recipe's settings onto a `BitsAndBytesConfig` for `model` (the fp32 parent), choosing the safe
    CPU defaults described in the module docstring. Raises ModelError for a configuration that cannot work.

    `skip_modules=None` keeps the classification head in full precision; a list replaces that default.
    `avx512_bf16=None` asks the CPU.
    """
    from transformers import BitsAndBytesConfig

    if method not in BNB_METHODS:
        raise ValueError(f"not a bitsandbytes method: {method}")
    require_bitsandbytes()
    avx = cpu_has_avx512_bf16() if avx512_bf16 is None else avx512_bf16
    shapes = linear_shapes(model)
    names = list(shapes)
    heads = [h for h in HEAD_MODULES if any(_matches(h, n) for n in names)]
    skip = list(heads if skip_modules is None else skip_modules)
    for pattern in skip:
        if skip_modules is not None and not any(_matches(pattern, n) for n in names):
            raise ModelError(f"skip_modules: {pattern!r} matches no linear layer of the model "
                             f"(e.g. {', '.join(names[:3])})")
    notes = [CPU_SLOWER_NOTE]
    empty = [name for name in empty_linear_modules(model) if not any(_matches(p, name) for p in skip)]
    skip += empty
    if empty:
        notes.append(f"kept in full precision because they have no weights (pruned away): {', '.join(empty)}")
    added: list[str] = []
    dtype_name: Optional[str] = None
    if method == "bnb-4bit":
        for name in unsafe_4bit_cpu_modules(model):
            if not any(_matches(p, name) for p in skip):
                added.append(name)
        skip += added
        if added:
            notes.append(f"kept in full precision because 4-bit CPU kernels need out_features % "
                         f"{CPU_PACK_BLOCK_N} == 0 and in_features % {BNB_4BIT_BLOCKSIZE} == 0: {', '.join(added)}")
        dtype_name = "float32" if compute_dtype == "auto" else compute_dtype
        if dtype_name != "float32" and avx:
            raise ModelError(f"compute_dtype: {dtype_name} cannot work for 4-bit on this CPU (AVX512-BF16: "
                             f"bitsandbytes' bf16 kernel fails unless compute dtype is float32); use float32 or auto")
        if dtype_name != "float32":
            notes.append(f"compute_dtype {dtype_name} works on this CPU but fails on AVX512-BF16 CPUs; "
                         f"float32 is the portable choice")
    quantized = [n for n in names if not any(_matches(p, n) for p in skip)]
    if not quantized:
        raise ModelError("skip_modules: every linear layer is skipped; nothing is left to quantize")
    if method == "bnb-8bit":
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=int8_threshold,
                                    llm_int8_skip_modules=skip)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                    bnb_4bit_use_double_quant=double_quant,
                                    bnb_4bit_compute_dtype=getattr(torch, dtype_name),
                                    llm_int8_skip_modules=skip)
    return BnbPlan(method, config, skip, added, quantized, dtype_name, avx, notes, empty, shapes)


def _is_quantized(config: dict[str, Any]) -> bool:
    return bool(config.get("quantization_config"))


def quantize_bnb(parent: Path, plan: BnbPlan, trust_remote_code: bool = False, device: Any = None) -> Any:
    """Load the parent folder quantized per `plan`, on CPU, or on `device` when that is a GPU (bitsandbytes' CUDA
    kernels). The result has run no forward: save it first. `trust_remote_code`: the recipe's setting, for a
    parent whose architecture ships as code (`auto_map`)."""
    from transformers import AutoModelForSequenceClassification

    parent = Path(parent)
    cfg = json.loads((parent / "config.json").read_text()) if (parent / "config.json").is_file() else {}
    if _is_quantized(cfg):
        raise ModelError(f"{parent}: the parent is already quantized; quantize from an unquantized stage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForSequenceClassification.from_pretrained(str(parent), quantization_config=plan.config,
                                                                   device_map=bnb_device_map(device),
                                                                   trust_remote_code=trust_remote_code)
    return model.eval()


def _repacked_modules(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if getattr(getattr(getattr(m, "weight", None), "quant_state", None), "packing_format_for_cpu", False)]


def save_bnb(model: Any, out: Path, tokenizer: Any = None) -> None:
    """`save_pretrained` (safetensors, quantization config in config.json). Refuses a 4-bit model whose weights
    an inference forward on an AVX512-BF16 CPU repacked: bitsandbytes would save a lossy copy of them."""
    repacked = _repacked_modules(model)
    if repacked:
        raise ModelError(f"cannot save: {len(repacked)} 4-bit layers ({repacked[0]}, …) were repacked by a forward "
                         f"pass on an AVX512-BF16 CPU, which corrupts saved weights; save before any forward")
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))


# ---------------------------------------------------------------------------------------------------- int8-cpu

def _model_inputs(model: Any, tokenizer: Any) -> list[str]:
    import inspect

    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    return [n for n in names if n in tokenizer.model_input_names or n == "attention_mask"]


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _onnx_weight_stats(onnx_path: Path) -> tuple[int, int]:
    """(bytes, values) of the graph's initializers: the weights ONNX Runtime holds in memory."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    nbytes = values = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        nbytes += arr.nbytes
        values += int(np.prod(arr.shape)) if arr.shape else 1
    return nbytes, values


def _linear_nodes(graph: Any) -> dict[str, int]:
    """`{node name: weight values}` of the graph's MatMul/Gemm nodes with a constant weight (the exported Linear
    layers), following the Identity nodes the exporter puts in front of a shared (deduplicated) initializer."""
    import numpy as np

    sizes = {init.name: int(np.prod(init.dims)) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            sizes.update({node.output[0]: int(np.prod(a.t.dims)) for a in node.attribute if a.name == "value"})
    for node in graph.node:  # graph order is topological: an Identity's input is resolved before it is used
        if node.op_type == "Identity" and node.input[0] in sizes:
            sizes[node.output[0]] = sizes[node.input[0]]
    return {node.name: sizes[node.input[1]] for node in graph.node
            if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in sizes}


def _module_of(node_name: str) -> str:
    """The module a torch.onnx node came from: `/bert/encoder/layer.0/attention/self/query/MatMul` →
    `bert.encoder.layer.0.attention.self.query`."""
    return ".".join(node_name.strip("/").split("/")[:-1])


def export_int8_cpu(model: torch.nn.Module, tokenizer: Any, out: Path, *, per_channel: bool = True,
                    quantize_embeddings: bool = True, sample_texts: Iterable[str] = ("a short example sentence",),
                    max_seq_length: int = 128, opset: int = 17) -> dict[str, Any]:
    """Export `model` (fp32, any Auto sequence classifier) to ONNX, quantize its weights to int8 with ONNX Runtime's
    dynamic quantization (activations quantized per batch at run time), and write `out/model.onnx`, config,
    tokenizer and `int8_cpu.json`. The fp32 export is checked against PyTorch before quantizing.

    Linear layers without weights (a pruned layer's removed attention or FFN) are left out of the quantization:
    ONNX Runtime's quantizer fails on them (empty FFN) or, for an empty attention, writes a graph whose outputs are
    silently wrong. The facts include `quantized_weight_fraction` (of the encoder's linear weights, read back
    from the quantized graph)."""
    import numpy as np

    onnx, ort = require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    model = model.float().eval()
    inputs = _model_inputs(model, tokenizer)
    texts = list(sample_texts)[:8] or ["a short example sentence"]
    enc = tokenizer(texts, truncation=True, max_length=max_seq_length, padding=True, return_tensors="pt")
    example = {n: enc[n] for n in inputs if n in enc}
    if "attention_mask" in inputs and "attention_mask" not in example:
        example["attention_mask"] = torch.ones_like(enc["input_ids"])
    inputs = list(example)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(model, (), str(fp32), kwargs=example, input_names=inputs, output_names=["logits"],
                                  dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in inputs},
                                                "logits": {0: "batch"}},
                                  opset_version=opset, dynamo=False)
            except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; the user needs one line
                raise ModelError(f"int8-cpu: ONNX export of {type(model).__name__} failed "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        with torch.inference_mode():
            ref = model(**example).logits.float().numpy()
        got = _session(fp32, 1).run(["logits"], {k: v.numpy() for k, v in example.items()})[0]
        export_diff = float(np.abs(ref - got).max())
        if export_diff > 1e-3 * max(1.0, float(np.abs(ref).max())):
            raise ModelError(f"int8-cpu: the ONNX export disagrees with PyTorch (max |Δlogit| {export_diff:.2e})")
        op_types = ["MatMul", "Gemm", "Attention"] + (["Gather"] if quantize_embeddings else [])
        linear = _linear_nodes(onnx.load(str(fp32)).graph)
        empty = sorted(name for name, size in linear.items() if size == 0)
        with warnings.catch_warnings(), _quiet_root_logger():  # "consider pre-processing": measured, no gain
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32), str(Path(tmp) / INT8_CPU_FILE), weight_type=QuantType.QInt8,
                             per_channel=per_channel, op_types_to_quantize=op_types, nodes_to_exclude=empty)
        still_float = set(_linear_nodes(onnx.load(str(Path(tmp) / INT8_CPU_FILE)).graph))
        quantized = [_module_of(name) for name in linear if name not in still_float]
        os.replace(Path(tmp) / INT8_CPU_FILE, out / INT8_CPU_FILE)
    nbytes, _ = _onnx_weight_stats(out / INT8_CPU_FILE)
    int8 = _session(out / INT8_CPU_FILE, 1).run(["logits"], {k: v.numpy() for k, v in example.items()})[0]
    model.config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    meta = {"format": "onnx-int8-dynamic", "file": INT8_CPU_FILE, "inputs": inputs, "output": "logits",
            "weight_type": "int8", "per_channel": per_channel, "quantize_embeddings": quantize_embeddings,
            "opset": opset, "params": int(sum(p.numel() for p in model.parameters())), "weight_bytes": nbytes,
            "onnxruntime": ort.__version__, "onnx": onnx.__version__}
    (out / INT8_CPU_META).write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "export_max_abs_diff": export_diff,
            "int8_max_abs_diff_on_samples": float(np.abs(ref - int8).max()),
            "skipped_empty": [_module_of(name) for name in empty],
            **quantized_fraction(linear_shapes(model), quantized)}


# ---------------------------------------------------------------------------------------------- LoRA recovery

def quantized_linear_names(model: torch.nn.Module) -> list[str]:
    """Full names of the layers bitsandbytes quantized."""
    import bitsandbytes as bnb

    return [name for name, m in model.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]


def add_lora(model: Any, r: int, alpha: float, target_modules: Any, dropout: float = 0.0) -> Any:
    """Wrap a quantized model with trainable LoRA adapters (QLoRA-style for 4-bit: the base stays frozen in
    4-bit, adapters and the full-precision head train in fp32). `all-linear` = every quantized layer: the
    classification head is trained whole (peft's `modules_to_save`), never given an adapter as well."""
    from peft import LoraConfig, get_peft_model

    targets = quantized_linear_names(model) if target_modules == "all-linear" else target_modules
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="SEQ_CLS")
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError) as e:
        raise ModelError(f"recover.lora.target_modules: {str(e).splitlines()[0][:200]}") from None


def save_adapter(peft_model: Any, out: Path, base_model: str) -> Path:
    """Save the adapter folder (`adapter_config.json`, `adapter_model.safetensors`) with its base recorded."""
    target = Path(out) / ADAPTER_DIR
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    with warnings.catch_warnings():  # peft looks for the base's config relative to the working directory
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(str(target), safe_serialization=True)
    return target


def copy_model_code(parent: Path, out: Path) -> list[str]:
    """Copy the parent's custom modeling files (a pruned model's `auto_map` code) so the folder loads on its own
    with `trust_remote_code=True`, as its parent does."""
    import shutil

    auto_map = (json.loads((Path(parent) / "config.json").read_text()).get("auto_map") or {})
    modules = {ref.split("--")[-1].split(".")[0] for ref in auto_map.values() if isinstance(ref, str)}
    copied = []
    for module in sorted(modules):
        src = Path(parent) / f"{module}.py"
        if src.is_file():
            shutil.copy2(src, Path(out) / src.name)
            copied.append(src.name)
    return copied
