"""Facts written into and read from .onnx files: metadata_props, op counts, weight bytes.

Shared by export (fp32 graphs) and quantize (int8 graphs), so both describe a file alike.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from runtime.manifest import Manifest

# ops that mean a graph loops or runs a fused RNN: never allowed in a step graph
LOOP_OPS = frozenset({"Loop", "Scan", "If", "GRU", "LSTM", "RNN"})


def _float32_json(values: list[float]) -> str:
    """JSON with 9 significant digits: exact for float32, half the length of Python's repr."""
    return json.dumps([float(f"{v:.9g}") for v in values])


def onnx_metadata(manifest: Manifest, graph: str, precision: str = "fp32") -> dict[str, str]:
    """The manifest fields an .onnx file carries in metadata_props, so a lone file explains
    itself (values are strings; lists are JSON)."""
    return {
        "graph": graph,
        "precision": precision,
        "model_name": manifest.model_name,
        "model_version": manifest.model_version,
        "model_kind": manifest.model_kind,
        "features": json.dumps(manifest.features),
        "classes": json.dumps(manifest.classes),
        "norm_mean": _float32_json(manifest.norm_mean),
        "norm_std": _float32_json(manifest.norm_std),
        "window": str(manifest.window),
        "hop": str(manifest.hop),
        "cell": manifest.cell or "",
        "layers": str(manifest.layers),
        "hidden_size": str(manifest.hidden_size),
        "stats_width": str(manifest.stats_width),
        "state_names": json.dumps(list(manifest.state_names)),
    }


def finish_onnx(path: Path, props: dict[str, str]) -> None:
    """Sets metadata_props, drops value_info (shape hints ONNX Runtime infers again at load;
    the quantizer adds them) and re-checks the file with onnx.checker."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def weight_bytes(path: Path) -> int:
    """Bytes of a graph's initializers (weights, biases, scales), without the graph around them."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type a graph has (Constant nodes left out)."""
    import onnx

    nodes = onnx.load(str(path)).graph.node
    return dict(sorted(Counter(n.op_type for n in nodes if n.op_type != "Constant").items()))
