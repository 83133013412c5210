"""Loading the formats the quantize stage writes, which plain `from_pretrained` cannot load on its own:
int8-cpu (ONNX Runtime), bitsandbytes folders (on CPU), and a quantized folder with a LoRA recovery adapter.

Creating them is `hfdistill.quantization`'s job; loading them lives here so that every layer that loads a model
(evaluation, the teacher cache, publishing checks) needs only `hfdistill.models`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from hfdistill.errors import ModelError
from hfdistill.models import pruned_bert  # noqa: F401  (pruned configs/classes known to the Auto classes)

INT8_CPU_FILE = "model.onnx"
INT8_CPU_META = "int8_cpu.json"
ADAPTER_DIR = "adapter"


# ---------------------------------------------------------------------------------------------------- int8-cpu
def require_onnxruntime() -> tuple[Any, Any]:
    try:
        import onnx  # optional extra hfdistill[onnx]
        import onnxruntime
    except ImportError:
        raise ModelError("method int8-cpu needs ONNX Runtime: pip install 'hfdistill[onnx]' "
                         "(onnx, onnxruntime, onnxscript)") from None
    return onnx, onnxruntime


def _session(path: Path, threads: Optional[int] = None) -> Any:
    _, ort = require_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Int8CpuModel:
    """An int8-cpu artefact, callable like a transformers model: `model(input_ids=..., attention_mask=...)`
    returns an object with `.logits` (a torch tensor). Inference only; runs on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: Optional[int] = None, trust_remote_code: bool = False):
        from transformers import AutoConfig

        self.path = Path(path)
        self.meta = json.loads((self.path / INT8_CPU_META).read_text())
        self.config = AutoConfig.from_pretrained(str(self.path), trust_remote_code=trust_remote_code)
        self.session = _session(self.path / self.meta.get("file", INT8_CPU_FILE), threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.weight_bytes = int(self.meta.get("weight_bytes", 0))
        self.training = False

    def __call__(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                 **_: Any) -> Any:
        import numpy as np
        from transformers.modeling_outputs import SequenceClassifierOutput

        def arr(x: Any) -> np.ndarray:
            return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.int64)

        ids = arr(input_ids)
        given = {"input_ids": ids,
                 "attention_mask": arr(attention_mask) if attention_mask is not None else np.ones_like(ids),
                 "token_type_ids": arr(token_type_ids) if token_type_ids is not None else np.zeros_like(ids)}
        logits = self.session.run(["logits"], {n: given[n] for n in self.input_names})[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))

    forward = __call__

    def eval(self) -> "Int8CpuModel":
        return self

    def num_parameters(self) -> int:
        return int(self.meta.get("params", 0))

    def get_memory_footprint(self) -> int:
        return self.weight_bytes


def is_int8_cpu_folder(path: Path) -> bool:
    return (Path(path) / INT8_CPU_META).is_file() and (Path(path) / INT8_CPU_FILE).is_file()


def load_int8_cpu(path: Path, threads: Optional[int] = None, trust_remote_code: bool = False) -> Int8CpuModel:
    """Load an int8-cpu folder (`model.onnx` + config + tokenizer + `int8_cpu.json`) for inference."""
    path = Path(path)
    if not is_int8_cpu_folder(path):
        raise ModelError(f"{path}: not an int8-cpu folder (needs {INT8_CPU_FILE} and {INT8_CPU_META})")
    require_onnxruntime()
    return Int8CpuModel(path, threads, trust_remote_code)




# ---------------------------------------------------------------------------------------------------- bitsandbytes
def bnb_device_map(device: Any = None) -> Any:
    """Where a bitsandbytes model loads: `"cpu"` by default; on a GPU the whole model on that one device
    (`{"": device}`), so its CUDA kernels run and accelerate trains it in place (an 8/4-bit model cannot be moved
    after loading)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return "cpu" if device.type == "cpu" else {"": device}


def load_bnb(path: Path, trust_remote_code: bool = False, device: Any = None) -> Any:
    """Reload a bitsandbytes folder with plain `from_pretrained` (the quantization config is in config.json), on
    CPU or on `device` (see `bnb_device_map`)."""
    from transformers import AutoModelForSequenceClassification

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForSequenceClassification.from_pretrained(str(path), device_map=bnb_device_map(device),
                                                                  trust_remote_code=trust_remote_code).eval()


def is_bnb_folder(path: Path) -> bool:
    """Whether a folder's config.json records a bitsandbytes quantization."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (config.get("quantization_config") or {}).get("quant_method") == "bitsandbytes"


def is_bnb_model(model: Any) -> bool:
    """Whether a loaded model (or a peft model around one) holds bitsandbytes 8/4-bit weights."""
    return bool(getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False))


def model_device(model: Any) -> torch.device:
    """The device a model computes on (an int8-cpu model: CPU)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def weight_bytes(model: Any) -> int:
    """Bytes the weights take in memory, quantization state included (4-bit absmax, code and nested scales; 8-bit
    row scales); an int8-cpu model reports its ONNX initializers.

    `get_memory_footprint()` counts only parameters and buffers, so it misses the 4-bit quantization state and the
    8-bit row scales (on the weight before the first forward, on the module's `state` after it).
    """
    if hasattr(model, "weight_bytes") and not isinstance(model, torch.nn.Module):
        return int(model.weight_bytes)
    seen: dict[int, torch.Tensor] = {}  # by id; the tensors are kept so that no id is reused while counting

    def add(t: Any) -> None:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen[id(t)] = t

    for t in list(model.parameters()) + list(model.buffers()):
        add(t)
        qs = getattr(t, "quant_state", None)
        if qs is not None:
            for v in qs.as_dict(packed=True).values():
                add(v)
        add(getattr(t, "SCB", None))
    for m in model.modules():
        add(getattr(getattr(m, "state", None), "SCB", None))
    return int(sum(t.numel() * t.element_size() for t in seen.values()))


# ---------------------------------------------------------------------------------------------------- adapters
def has_adapter(path: Path) -> bool:
    return (Path(path) / ADAPTER_DIR / "adapter_config.json").is_file()


def load_with_adapter(path: Path, trust_remote_code: bool = False, device: Any = None) -> Any:
    """A quantized folder with a recovery adapter: the quantized base from `path` (on CPU or `device`), the adapter
    from `path/adapter` (`PeftModel.from_pretrained(base, adapter)`)."""
    from peft import PeftModel

    base = load_bnb(path, trust_remote_code, device)
    return PeftModel.from_pretrained(base, str(Path(path) / ADAPTER_DIR)).eval()
