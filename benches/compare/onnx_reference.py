#!/usr/bin/env python3
"""onnxruntime reference for the tierline encoder: the same model weights exported to ONNX
(transformer + mean pooling + L2 normalisation in one graph), the same sentences, the same
methodology and JSON shape as reference.py (tokenization included in every timed call, batches
padded to their longest text as sentence-transformers does).

    python benches/compare/onnx_reference.py --model-dir DIR --json

The export is cached in benches/compare/.onnx/ (keyed by the model folder).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import load_sentences, log, parse_batch_sizes, timed_calls  # noqa: E402  (same method as the PyTorch side)


def export(model_dir: str) -> str:
    """Exports the model once; returns the .onnx path."""
    key = hashlib.sha256(os.path.abspath(model_dir).encode()).hexdigest()[:16]
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".onnx")
    path = os.path.join(out_dir, f"{key}.onnx")
    if os.path.exists(path):
        return path
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    os.makedirs(out_dir, exist_ok=True)
    model = Pooled(AutoModel.from_pretrained(model_dir).eval())
    ids = torch.ones((2, 8), dtype=torch.long)
    log(f"exporting {model_dir} to {path}")
    torch.onnx.export(
        model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), path,
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
        dynamic_axes={name: {0: "batch", 1: "tokens"} for name in ["input_ids", "attention_mask", "token_type_ids"]},
        opset_version=17, dynamo=False,
    )
    return path


def main() -> int:
    p = argparse.ArgumentParser(description="onnxruntime reference benchmark (same method as reference.py)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--sentences", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "sentences.txt"))
    p.add_argument("--batch-sizes", type=parse_batch_sizes, default=parse_batch_sizes("1,8,32,64"))
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    path = export(args.model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    max_length = min(getattr(tokenizer, "model_max_length", 256), 256)
    sentences = load_sentences(args.sentences)
    log(f"onnxruntime {ort.__version__}, {len(sentences)} sentences")

    def encode(batch):
        tokens = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feed = {name: tokens[name].astype(np.int64) for name in ["input_ids", "attention_mask", "token_type_ids"]}
        return session.run(None, feed)[0]

    results = [timed_calls(encode, sentences, bs, args.warmup, args.min_seconds) for bs in args.batch_sizes]

    report = {
        "engine": "onnxruntime-f32", "precision": "f32", "threads": args.threads or os.cpu_count(),
        "results": results, "model_dir": os.path.abspath(args.model_dir), "num_sentences": len(sentences),
        "min_seconds": args.min_seconds, "warmup": args.warmup,
        "versions": {"python": platform.python_version(), "onnxruntime": ort.__version__},
    }
    print(json.dumps(report) if args.json else json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
