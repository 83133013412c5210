"""`import hfdistill` and `hfdistill --help` are fast (no torch/transformers), yet `import hfdistill` still makes
pruned models loadable with plain `AutoModelForSequenceClassification.from_pretrained` (issue 15)."""

import subprocess
import sys
import time


def _py(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_import_and_help_load_neither_torch_nor_transformers():
    res = _py("import sys, hfdistill, hfdistill.cli\n"
              "heavy = [m for m in ('torch', 'transformers', 'huggingface_hub', 'pydantic') if m in sys.modules]\n"
              "print(heavy)")
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "hfdistill", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: hfdistill" in proc.stdout
    assert time.time() - start < 3.0  # it was 5–12 s when torch and transformers loaded first


def test_pruned_models_load_through_the_auto_classes_after_import_hfdistill(tmp_path):
    from transformers import BertConfig

    from hfdistill.models.pruned_bert import model_class_for, pruned_config, save_pruned

    cfg = pruned_config(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, num_labels=2), heads=[1, 2], head_size=16, ffn=[10, 64])
    save_pruned(model_class_for(cfg)(cfg), tmp_path / "p")
    for module in ("model_hfdistill_pruned.py", "modeling_hfdistill_pruned.py"):  # plain loading, no remote code
        (tmp_path / "p" / module).unlink(missing_ok=True)
    code = ("import hfdistill\nfrom transformers import AutoModelForSequenceClassification as A\n"
            f"m = A.from_pretrained({str(tmp_path / 'p')!r})\nprint(type(m).__name__)")
    res = _py(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("PrunedBertForSequenceClassification")
    res = _py(code.replace("import hfdistill\n", ""), cwd=tmp_path)  # without hfdistill: not known
    assert res.returncode != 0
